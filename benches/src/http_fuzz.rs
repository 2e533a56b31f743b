//! `http-fuzz`: a mutation fuzzer for the JSON and multipart request bodies of a running service,
//! through its real HTTP stack (axum extractors, our JSON parsing and validation, the handlers).
//!
//! Seeds are valid requests of every route; each execution mutates one (JSON-aware: a field
//! removed, retyped, made huge, negative, deeply nested, or an unknown field added; or byte-level:
//! flips, insertions, cuts, splices; for multipart, the parts and the audio bytes) and sends it.
//! Every answer must be a success or a client error (4xx), or 429/503 with Retry-After; a 5xx, a
//! dropped connection or a timeout is a failure, saved to --crashes with the route. After the run
//! the service must still answer /healthz. Prints executions per route as one JSON object.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use common::Target;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "30s", value_parser = voice_runtime::cli::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where failing inputs are written (one file per failure).
    #[arg(long, default_value = "/tmp/voice-http-fuzz")]
    crashes: PathBuf,
    #[arg(long, default_value = "60s", value_parser = voice_runtime::cli::parse_duration)]
    timeout: Duration,
    #[arg(long, env = "LOAD_TEST_API_KEY")]
    api_key: Option<String>,
    /// The service's --max-body-bytes: a body over it is refused (413) before it is read, and the
    /// server closing the connection may reset the client mid-upload; that counts as refused.
    /// Default: the service's built-in limit.
    #[arg(long, value_parser = voice_runtime::cli::parse_bytes)]
    body_limit: Option<u64>,
}

enum Body {
    Json(Value),
    Multipart(Vec<(String, Vec<u8>)>),
}

fn seeds(target: Target, wav: &[u8]) -> Vec<(&'static str, Body)> {
    match target {
        Target::Stt => vec![
            (
                "/v1/audio/transcriptions",
                Body::Multipart(vec![
                    ("model".into(), b"whisper-1".to_vec()),
                    ("file".into(), wav.to_vec()),
                    ("response_format".into(), b"verbose_json".to_vec()),
                    ("timestamp_granularities[]".into(), b"word".to_vec()),
                    ("temperature".into(), b"0".to_vec()),
                    ("language".into(), b"en".to_vec()),
                ]),
            ),
            ("/v1/audio/translations", Body::Multipart(vec![("file".into(), wav.to_vec()), ("response_format".into(), b"srt".to_vec())])),
        ],
        Target::Llm => vec![
            (
                "/v1/chat/completions",
                Body::Json(
                    json!({"model": "smollm2-135m-instruct", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "seed": 1, "stop": ["\n"], "stream": false}),
                ),
            ),
            ("/v1/chat/completions", Body::Json(json!({"messages": [{"role": "user", "content": "Count"}], "max_tokens": 3, "stream": true}))),
            ("/v1/completions", Body::Json(json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}))),
        ],
        Target::Tts => vec![(
            "/v1/audio/speech",
            Body::Json(json!({"model": "tts-1", "input": "Hi there.", "voice": "af_heart", "response_format": "wav", "speed": 1.0})),
        )],
        Target::Embed => vec![
            ("/v1/embeddings", Body::Json(json!({"input": ["hello world", "the cat"], "model": "all-minilm-l6-v2", "encoding_format": "float"}))),
            ("/v1/collections", Body::Json(json!({"name": "fuzz", "dimensions": 384}))),
            (
                "/v1/collections/fuzz/documents",
                Body::Json(json!({"documents": [{"id": "d1", "text": "The office cat is called Biscuit.", "metadata": {"team": "voice"}}]})),
            ),
            ("/v1/collections/fuzz/search", Body::Json(json!({"query": "cat", "top_k": 3, "filter": {"team": "voice"}}))),
            ("/v1/collections/fuzz/context", Body::Json(json!({"query": "cat", "max_tokens": 64}))),
        ],
        Target::Agent => vec![("/api/token", Body::Json(json!({"room": "fuzz-room", "identity": "user-1"})))],
    }
}

fn nasty_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1e308),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(""),
        6 => json!("x".repeat(rng.random_range(1000..200_000))),
        7 => json!([]),
        8 => json!({}),
        9 => {
            let mut v = json!(1);
            for _ in 0..rng.random_range(10..200) {
                v = json!([v]);
            }
            v
        }
        10 => json!("\u{0000}\u{202e}\u{1F600}é\u{FFFF}"),
        11 => json!(true),
        12 => json!(0.0),
        _ => json!(vec!["a"; rng.random_range(100..5000)]),
    }
}

fn mutate_json(v: &mut Value, rng: &mut StdRng, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = keys[rng.random_range(0..keys.len())].clone();
            match rng.random_range(0..5) {
                0 => {
                    map.remove(&k);
                }
                1 => {
                    map.insert(k, nasty_value(rng));
                }
                2 => {
                    map.insert(format!("unknown_{}", rng.random_range(0..100)), nasty_value(rng));
                }
                _ if depth < 4 => mutate_json(map.get_mut(&k).unwrap(), rng, depth + 1),
                _ => {
                    map.insert(k, nasty_value(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            match rng.random_range(0..3) {
                0 => {
                    let dup = items[i].clone();
                    for _ in 0..rng.random_range(1..300) {
                        items.push(dup.clone());
                    }
                }
                1 => {
                    items.remove(i);
                }
                _ => mutate_json(&mut items[i], rng, depth + 1),
            }
        }
        other => *other = nasty_value(rng),
    }
}

fn mutate_bytes(b: &mut Vec<u8>, rng: &mut StdRng) {
    for _ in 0..rng.random_range(1..8) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..5) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b.insert(i, rng.random()),
            2 => {
                let end = (i + rng.random_range(1..64)).min(b.len());
                b.drain(i..end);
            }
            3 => b.truncate(i),
            _ => {
                let end = (i + rng.random_range(1..64)).min(b.len());
                let piece = b[i..end].to_vec();
                let at = rng.random_range(0..b.len());
                b.splice(at..at, piece);
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.crashes)?;
    let wav = if args.target == Target::Stt {
        let p = voice_models::default_cache_dir().join("jfk-sample/jfk.wav");
        let full = voice_runtime::audio::decode(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?, 60.0)?;
        // One second keeps the valid executions fast.
        voice_runtime::audio::encode_wav(&full.samples[..full.sample_rate as usize], full.sample_rate, 1, false)
    } else {
        vec![]
    };
    let seeds = seeds(args.target, &wav);
    let client = reqwest::Client::builder().timeout(args.timeout).build()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let base = args.url.trim_end_matches('/').to_string();
    let start = Instant::now();
    let (mut executions, mut failures, mut reset_over_limit) = (0u64, 0u64, 0u64);
    let body_limit = args.body_limit.unwrap_or(match args.target {
        Target::Stt => 25_000_000,
        Target::Llm => 4_000_000,
        Target::Tts => 1_000_000,
        Target::Embed => 16_000_000,
        Target::Agent => 64_000,
    });
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    while start.elapsed() < args.duration {
        let (route, seed) = &seeds[rng.random_range(0..seeds.len())];
        let mut req = client.post(format!("{base}{route}"));
        if let Some(k) = &args.api_key {
            req = req.bearer_auth(k);
        }
        let (req, sent): (reqwest::RequestBuilder, Vec<u8>) = match seed {
            Body::Json(v) => {
                let mut bytes = if rng.random_bool(0.7) {
                    let mut v = v.clone();
                    for _ in 0..rng.random_range(1..4) {
                        mutate_json(&mut v, &mut rng, 0);
                    }
                    serde_json::to_vec(&v)?
                } else {
                    serde_json::to_vec(v)?
                };
                if rng.random_bool(0.3) {
                    mutate_bytes(&mut bytes, &mut rng);
                }
                (req.header("content-type", "application/json").body(bytes.clone()), bytes)
            }
            Body::Multipart(parts) => {
                let mut parts = parts.clone();
                match rng.random_range(0..4) {
                    0 if !parts.is_empty() => {
                        let i = rng.random_range(0..parts.len());
                        parts.remove(i);
                    }
                    1 => {
                        let i = rng.random_range(0..parts.len());
                        mutate_bytes(&mut parts[i].1, &mut rng);
                    }
                    2 => parts.push((["file", "model", "temperature", "language", "prompt"][rng.random_range(0..5)].into(), {
                        let mut b = b"0.5".to_vec();
                        mutate_bytes(&mut b, &mut rng);
                        b
                    })),
                    _ => {}
                }
                // Hand-built so that the framing itself can be broken too.
                let boundary = "fuzzboundary";
                let mut body = vec![];
                for (name, data) in &parts {
                    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.wav\"\r\n\r\n").as_bytes());
                    body.extend(data);
                    body.extend(b"\r\n");
                }
                body.extend(format!("--{boundary}--\r\n").as_bytes());
                if rng.random_bool(0.2) {
                    mutate_bytes(&mut body, &mut rng);
                }
                (req.header("content-type", format!("multipart/form-data; boundary={boundary}")).body(body.clone()), body)
            }
        };
        executions += 1;
        let verdict = match req.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                *statuses.entry(code).or_default() += 1;
                let retry = resp.headers().contains_key("retry-after");
                // Read the whole answer: a stream that breaks mid-way is a failure too.
                let body = resp.bytes().await;
                match (code, body) {
                    (_, Err(e)) => Some(format!("{code}, body broke: {e}")),
                    (200..=299 | 400..=428 | 430..=499, Ok(_)) => None,
                    (429 | 503, Ok(_)) if retry => None,
                    (_, Ok(b)) => Some(format!("{code}: {}", String::from_utf8_lossy(&b).chars().take(300).collect::<String>())),
                }
            }
            Err(_) if sent.len() as u64 > body_limit => {
                reset_over_limit += 1;
                None
            }
            Err(e) => Some(format!("transport: {e}")),
        };
        if let Some(why) = verdict {
            failures += 1;
            let f = args.crashes.join(format!("{:?}-{executions}.bin", args.target).to_lowercase());
            std::fs::write(&f, &sent)?;
            eprintln!("http-fuzz: FAILURE {route}: {why} (input: {})", f.display());
        }
    }
    let alive = client.get(format!("{base}/healthz")).send().await.map(|r| r.status().is_success()).unwrap_or(false);
    let report = json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "seconds": start.elapsed().as_secs(),
        "executions": executions,
        "failures": failures,
        "statuses": statuses,
        "reset_over_body_limit": reset_over_limit,
        "alive_after": alive,
    });
    println!("{report}");
    if failures > 0 || !alive {
        std::process::exit(1);
    }
    Ok(())
}
