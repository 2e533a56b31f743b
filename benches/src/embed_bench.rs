//! Embedding throughput and RAG search latency.
//!
//! 1. Sentences/s with all-MiniLM-L6-v2 at batch 1 and batch 32 (real sentences, 8-20 words).
//!    The peer (sentence-transformers on torch, same weights) runs where torch is installed:
//!    `benches/embed_peer.py` prints the same figures; this machine has no torch (the PyPI
//!    wheel is a multi-GB CUDA build), so here only our own figures are reported.
//! 2. Search latency p50/p99 over `--chunks` chunks (default 100k) for the embedded store and
//!    PostgreSQL + pgvector (a throwaway server, as in the tests). The chunks are synthetic: unit
//!    vectors drawn at random and text from a 5k-word vocabulary, since embedding 100k real
//!    chunks on 2 cores would take the better part of an hour and latency does not depend on it.
//!
//! Usage: embed-bench [--device cpu|cuda] [--chunks 100000] [--queries 200] [--skip-postgres]

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use rand::{rngs::StdRng, Rng, SeedableRng};
use voice_embeddings::Embedder;
use voice_rag::{
    search::{self, SearchParams},
    store::{ChunkWrite, DocumentInfo, DocumentWrite, Store},
    EmbeddedStore, PostgresStore,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sentences(n: usize, rng: &mut StdRng) -> Vec<String> {
    let subjects =
        ["The library", "My phone", "The espresso machine", "Our team", "The train to Leeds", "A small dog", "The solar panel", "This recipe"];
    let verbs = ["needs", "opens", "charges", "arrives", "takes", "waits for", "supports", "replaces"];
    let objects = [
        "a new battery",
        "the morning shift",
        "twenty minutes of rest",
        "the second platform",
        "fresh water every day",
        "a signed form",
        "the quarterly report",
        "two cups of flour",
    ];
    let tails = ["before noon.", "on weekends only.", "when it rains.", "if you ask politely.", "according to the manual.", "every other month."];
    (0..n)
        .map(|_| {
            format!(
                "{} {} {} {}",
                subjects[rng.random_range(0..subjects.len())],
                verbs[rng.random_range(0..verbs.len())],
                objects[rng.random_range(0..objects.len())],
                tails[rng.random_range(0..tails.len())]
            )
        })
        .collect()
}

fn random_unit(dims: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

async fn search_latency(store: &dyn Store, dims: usize, chunks: usize, queries: usize, rng: &mut StdRng) -> Result<(f64, f64, f64)> {
    let vocab: Vec<String> = (0..5000).map(|i| format!("w{i:04}x")).collect();
    store.create_collection("bench", dims, "synthetic").await?;
    let t0 = Instant::now();
    let per_doc = 50;
    let mut batch = Vec::new();
    for d in 0..chunks.div_ceil(per_doc) {
        let n = per_doc.min(chunks - d * per_doc);
        let chunk_writes = (0..n)
            .map(|i| ChunkWrite {
                index: i as u32,
                text: (0..60).map(|_| vocab[rng.random_range(0..vocab.len())].as_str()).collect::<Vec<_>>().join(" "),
                section: String::new(),
                embedding: random_unit(dims, rng),
            })
            .collect();
        let mut metadata = serde_json::Map::new();
        metadata.insert("shard".into(), serde_json::json!(d % 10));
        batch.push(DocumentWrite {
            info: DocumentInfo { id: format!("d{d:06}"), content_hash: String::new(), metadata, chunks: n as u32, updated_at: 0 },
            chunks: chunk_writes,
        });
        if batch.len() == 20 {
            store.upsert("bench", std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.upsert("bench", batch).await?;
    }
    eprintln!("{}: loaded {chunks} chunks in {:.1} s", store.backend(), t0.elapsed().as_secs_f64());
    let p = SearchParams { top_k: 5, ..Default::default() };
    let mut lat = Vec::new();
    for q in 0..queries + 10 {
        let text: String = (0..6).map(|_| vocab[rng.random_range(0..vocab.len())].as_str()).collect::<Vec<_>>().join(" ");
        let v = random_unit(dims, rng);
        let t = Instant::now();
        let hits = search::search(store, "bench", &text, &v, &p).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(!hits.is_empty());
        if q >= 10 {
            lat.push(ms); // the first 10 warm caches up
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((pct(&lat, 0.5), pct(&lat, 0.99), t0.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let device = match arg("--device").as_deref() {
        Some("cuda") => Device::new_cuda(0)?,
        _ => Device::Cpu,
    };
    let chunks: usize = arg("--chunks").map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let queries: usize = arg("--queries").map(|s| s.parse()).transpose()?.unwrap_or(200);
    let dir = voice_models::Fetcher::new(None).resolve("all-minilm-l6-v2", true, &[])?.dir;
    let e = Embedder::load(&dir, &device)?;
    let mut rng = StdRng::seed_from_u64(7);
    let texts = sentences(512, &mut rng);
    let enc = e.encode(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
    let tokens: usize = enc.iter().map(|x| x.ids.len()).sum();
    // Warm-up.
    e.embed(&enc[..32].iter().collect::<Vec<_>>())?;
    for batch in [1usize, 32] {
        let n = if batch == 1 { 128 } else { 512 };
        let t = Instant::now();
        for group in enc[..n].chunks(batch) {
            e.embed(&group.iter().collect::<Vec<_>>())?;
        }
        let s = t.elapsed().as_secs_f64();
        println!("embed batch={batch:<3} {:>8.1} sentences/s  ({n} sentences, mean {:.1} tokens)", n as f64 / s, tokens as f64 / texts.len() as f64);
    }

    let mut rng = StdRng::seed_from_u64(11);
    let tmp = std::env::temp_dir().join(format!("embed-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let embedded = EmbeddedStore::open(&tmp)?;
    let (p50, p99, total) = search_latency(&embedded, e.dimensions, chunks, queries, &mut rng).await?;
    println!("search embedded  chunks={chunks} p50 {p50:.2} ms  p99 {p99:.2} ms  (hybrid top-5, {queries} queries; {total:.0} s incl. load)");
    drop(embedded);
    let _ = std::fs::remove_dir_all(&tmp);
    if std::env::args().all(|a| a != "--skip-postgres") {
        let pg = voice_testkit::postgres::Postgres::start();
        let store = PostgresStore::connect(&pg.url, e.dimensions, 4).await?;
        let mut rng = StdRng::seed_from_u64(11);
        let (p50, p99, total) = search_latency(&store, e.dimensions, chunks, queries, &mut rng).await?;
        println!("search postgres  chunks={chunks} p50 {p50:.2} ms  p99 {p99:.2} ms  (hybrid top-5, HNSW + B-tree postings, {queries} queries; {total:.0} s incl. load)");
    }
    Ok(())
}
