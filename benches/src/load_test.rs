//! `load-test`: N concurrent clients against one running service for a bounded time, each
//! request checked for a correct answer, and (optionally) a `kill -9` + restart in the middle.
//!
//! Every request must end in exactly one of: served with a correct body (transcript words, a WAV
//! of speech, a chat answer, a 384-dim embedding, an acknowledged document), or refused with 429
//! or 503 *and* a `Retry-After` header. Anything else (5xx, 4xx, wrong body, missing
//! Retry-After, transport error) is a failure — except transport errors of requests that were in
//! flight at the kill or sent while the process was down (`--kill-at`). For voice-embed, every
//! document the service acknowledged is read back at the end: none may be lost.
//!
//! The service's memory is sampled from /proc/<pid>/status every 50 ms (peak RSS reported).
//! Exit status 1 when any check fails; the figures go to stdout as one JSON object.

mod common;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::Target;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Concurrent clients against one voice-ai service, with correctness checks")]
struct Args {
    /// Which service the URL points at (decides requests and checks).
    #[arg(long, value_enum)]
    target: Target,
    /// The service's HTTP base URL.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long clients keep sending, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = voice_runtime::cli::parse_duration)]
    duration: Duration,
    /// The service's process id (peak RSS; the process `--kill-at` kills).
    #[arg(long)]
    pid: Option<u32>,
    /// Bearer key to send.
    #[arg(long, env = "LOAD_TEST_API_KEY")]
    api_key: Option<String>,
    /// A 16 kHz WAV for voice-stt (default: the JFK sample in the model cache).
    #[arg(long)]
    wav: Option<PathBuf>,
    /// kill -9 the service this far into the run, then run --restart (a shell command that starts
    /// it again on the same ports and prints nothing we need; its new pid is read from --pid-file).
    #[arg(long, value_parser = voice_runtime::cli::parse_duration)]
    kill_at: Option<Duration>,
    #[arg(long)]
    restart: Option<String>,
    /// File where --restart writes the new process id.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Per-request client timeout.
    #[arg(long, default_value = "120s", value_parser = voice_runtime::cli::parse_duration)]
    timeout: Duration,
}

#[derive(Default)]
struct Tally {
    served: u64,
    refused_429: u64,
    refused_503: u64,
    failures: Vec<String>,
    transport_errors_in_kill_window: u64,
    latencies_ms: Vec<f64>,
    acknowledged_docs: Vec<String>,
}

struct Shared {
    args: Args,
    wav: Vec<u8>,
    start: Instant,
    tally: Mutex<Tally>,
    /// Milliseconds since start: when the kill happened, and when the restarted service answered
    /// its first request correctly (u64::MAX = not yet).
    killed_at_ms: AtomicU64,
    /// When the old process was gone and the restart began: only requests sent after it can
    /// prove the service is back (one sent just after the kill may still be served by the old one).
    restart_from_ms: AtomicU64,
    back_at_ms: AtomicU64,
    doc_counter: AtomicU64,
    stop: AtomicBool,
}

enum Outcome {
    Served(Option<String>),
    Refused(u16),
}

async fn one_request(s: &Shared, client: &reqwest::Client, id: usize, n: u64) -> Result<Outcome> {
    let url = s.args.url.trim_end_matches('/');
    let auth = |r: reqwest::RequestBuilder| match &s.args.api_key {
        Some(k) => r.bearer_auth(k),
        None => r,
    };
    let resp = match s.args.target {
        Target::Stt => {
            let form = reqwest::multipart::Form::new()
                .text("model", "whisper-1")
                .part("file", reqwest::multipart::Part::bytes(s.wav.clone()).file_name("jfk.wav").mime_str("audio/wav")?);
            auth(client.post(format!("{url}/v1/audio/transcriptions")).multipart(form)).send().await?
        }
        Target::Llm => {
            let body = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8, "temperature": 0});
            auth(client.post(format!("{url}/v1/chat/completions")).json(&body)).send().await?
        }
        Target::Tts => {
            let body = json!({"model": "tts-1", "input": "Hello there, how can I help?", "voice": "af_heart", "response_format": "wav"});
            auth(client.post(format!("{url}/v1/audio/speech")).json(&body)).send().await?
        }
        Target::Embed if n.is_multiple_of(2) => {
            let doc_id = format!("load-{}-{id}-{}", std::process::id(), s.doc_counter.fetch_add(1, Ordering::SeqCst));
            let body =
                json!({"documents": [{"id": doc_id, "text": format!("Load test document {doc_id}: the office cat sleeps on the GPU server.")}]});
            let r = auth(client.post(format!("{url}/v1/collections/load-test/documents")).json(&body)).send().await?;
            return check(r, s.args.target, Some(doc_id)).await;
        }
        Target::Embed => {
            let body = json!({"input": ["what does the office cat do?"]});
            auth(client.post(format!("{url}/v1/embeddings")).json(&body)).send().await?
        }
        Target::Agent => auth(client.get(format!("{url}/v1/conversations"))).send().await?,
    };
    check(resp, s.args.target, None).await
}

/// Served correctly, refused properly, or an error saying what was wrong.
async fn check(resp: reqwest::Response, target: Target, doc: Option<String>) -> Result<Outcome> {
    let status = resp.status().as_u16();
    if status == 429 || status == 503 {
        let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if retry.is_none() {
            bail!("{status} without a numeric Retry-After");
        }
        return Ok(Outcome::Refused(status));
    }
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        bail!("status {status}: {}", text.chars().take(200).collect::<String>());
    }
    match target {
        Target::Stt => {
            let v: Value = resp.json().await?;
            let text = v["text"].as_str().unwrap_or("").to_lowercase();
            if !text.contains("country") {
                bail!("transcript without `country`: {text:?}");
            }
        }
        Target::Llm => {
            let v: Value = resp.json().await?;
            let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
            if text.trim().is_empty() {
                bail!("empty chat answer: {v}");
            }
        }
        Target::Tts => {
            let bytes = resp.bytes().await?;
            let pcm = voice_runtime::audio::decode(&bytes, 60.0).context("the speech is not a valid WAV")?;
            let rms = (pcm.samples.iter().map(|x| x * x).sum::<f32>() / pcm.samples.len().max(1) as f32).sqrt();
            if pcm.duration_secs() < 0.8 || rms < 0.01 {
                bail!("speech too short or silent: {:.2} s, rms {rms:.4}", pcm.duration_secs());
            }
        }
        Target::Embed if doc.is_some() => {
            let v: Value = resp.json().await?;
            if v.get("error").is_some() {
                bail!("ingest answered 200 with an error: {v}");
            }
            return Ok(Outcome::Served(doc));
        }
        Target::Embed => {
            let v: Value = resp.json().await?;
            let dims = v["data"][0]["embedding"].as_array().map_or(0, |a| a.len());
            if dims != 384 {
                bail!("embedding of {dims} dimensions, expected 384");
            }
        }
        Target::Agent => {
            let v: Value = resp.json().await?;
            if !v.is_object() && !v.is_array() {
                bail!("conversations is not JSON: {v}");
            }
        }
    }
    Ok(Outcome::Served(None))
}

async fn client_loop(s: Arc<Shared>, id: usize) {
    let client = reqwest::Client::builder().timeout(s.args.timeout).pool_max_idle_per_host(1).build().expect("client");
    let mut n = 0u64;
    while !s.stop.load(Ordering::SeqCst) && s.start.elapsed() < s.args.duration {
        n += 1;
        let sent_ms = s.start.elapsed().as_millis() as u64;
        let t0 = Instant::now();
        let outcome = one_request(&s, &client, id, n).await;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        // Tally under the lock, then pause (if at all) without holding it.
        let pause_ms = {
            let mut t = s.tally.lock().unwrap();
            match outcome {
                Ok(Outcome::Served(doc)) => {
                    t.served += 1;
                    t.latencies_ms.push(ms);
                    if let Some(d) = doc {
                        t.acknowledged_docs.push(d);
                    }
                    let restart_from = s.restart_from_ms.load(Ordering::SeqCst);
                    if restart_from != u64::MAX && sent_ms >= restart_from {
                        s.back_at_ms.fetch_min(s.start.elapsed().as_millis() as u64, Ordering::SeqCst);
                    }
                    0
                }
                Ok(Outcome::Refused(code)) => {
                    if code == 429 {
                        t.refused_429 += 1
                    } else {
                        t.refused_503 += 1
                    }
                    // Keep the pressure on, but not in a busy loop.
                    100 + (id as u64 * 7) % 100
                }
                Err(e) => {
                    let killed = s.killed_at_ms.load(Ordering::SeqCst);
                    let back = s.back_at_ms.load(Ordering::SeqCst);
                    let is_transport =
                        e.downcast_ref::<reqwest::Error>().is_some_and(|r| r.is_connect() || r.is_request() || r.is_body() || r.is_decode());
                    // In flight at the kill (sent before, ended after) or sent while it was down.
                    if is_transport && killed != u64::MAX && s.start.elapsed().as_millis() as u64 >= killed && sent_ms <= back {
                        t.transport_errors_in_kill_window += 1;
                        100
                    } else {
                        t.failures.push(format!("client {id} at {sent_ms} ms: {e:#}"));
                        0
                    }
                }
            }
        };
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let wav = match args.target {
        Target::Stt => {
            let p = args.wav.clone().unwrap_or_else(|| voice_models::default_cache_dir().join("jfk-sample/jfk.wav"));
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?
        }
        _ => vec![],
    };
    let shared = Arc::new(Shared {
        args,
        wav,
        start: Instant::now(),
        tally: Mutex::new(Tally::default()),
        killed_at_ms: AtomicU64::new(u64::MAX),
        restart_from_ms: AtomicU64::new(u64::MAX),
        back_at_ms: AtomicU64::new(u64::MAX),
        doc_counter: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let s = &shared;
    let pid = Arc::new(AtomicU64::new(s.args.pid.unwrap_or(0) as u64));
    let rss_before_kb = s.args.pid.and_then(|p| rss_kb(p, "VmRSS:")).unwrap_or(0);

    // Memory sampler.
    let peak_rss_kb = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, peak, shared) = (pid.clone(), peak_rss_kb.clone(), shared.clone());
        tokio::spawn(async move {
            while !shared.stop.load(Ordering::SeqCst) {
                if let Some(kb) = rss_kb(pid.load(Ordering::SeqCst) as u32, "VmRSS:") {
                    peak.fetch_max(kb, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The kill and restart.
    let killer = match (s.args.kill_at, s.args.pid) {
        (Some(at), Some(_)) => {
            let (pid, shared) = (pid.clone(), shared.clone());
            let restart = s.args.restart.clone().context("--kill-at needs --restart")?;
            let pid_file = s.args.pid_file.clone().context("--kill-at needs --pid-file")?;
            Some(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                let victim = pid.load(Ordering::SeqCst) as i32;
                // Mark the window first: a request may fail the instant the process dies.
                shared.killed_at_ms.store(shared.start.elapsed().as_millis() as u64, Ordering::SeqCst);
                let _ = std::process::Command::new("kill").args(["-9", &victim.to_string()]).status();
                // Restart once the old process is gone (a zombie holds no sockets).
                for _ in 0..100 {
                    let state = std::fs::read_to_string(format!("/proc/{victim}/stat")).ok();
                    if state.as_deref().and_then(|s| s.rsplit(')').next()).is_none_or(|rest| rest.trim_start().starts_with('Z')) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                eprintln!("load-test: killed pid {victim} at {} ms", shared.start.elapsed().as_millis());
                shared.restart_from_ms.store(shared.start.elapsed().as_millis() as u64, Ordering::SeqCst);
                let _ = std::fs::remove_file(&pid_file);
                let st = std::process::Command::new("sh").args(["-c", &restart]).status();
                eprintln!("load-test: restart command: {st:?}");
                for _ in 0..200 {
                    if let Some(p) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
                        pid.store(p, Ordering::SeqCst);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }))
        }
        (Some(_), None) => bail!("--kill-at needs --pid"),
        _ => None,
    };

    let clients: Vec<_> = (0..s.args.clients).map(|i| tokio::spawn(client_loop(shared.clone(), i))).collect();
    for c in clients {
        let _ = c.await;
    }
    let elapsed = s.start.elapsed().as_secs_f64();
    if let Some(k) = killer {
        let _ = k.await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;

    // Nothing acknowledged may be lost (voice-embed).
    let mut lost = vec![];
    let docs = s.tally.lock().unwrap().acknowledged_docs.clone();
    if !docs.is_empty() {
        let client = reqwest::Client::new();
        for d in &docs {
            let mut r = client.get(format!("{}/v1/collections/load-test/documents/{d}", s.args.url.trim_end_matches('/')));
            if let Some(k) = &s.args.api_key {
                r = r.bearer_auth(k);
            }
            match r.send().await {
                Ok(resp) if resp.status() == 200 => {}
                Ok(resp) => lost.push(format!("{d}: {}", resp.status())),
                Err(e) => lost.push(format!("{d}: {e}")),
            }
        }
    }

    let t = s.tally.lock().unwrap();
    let mut lat = t.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let killed = s.killed_at_ms.load(Ordering::SeqCst);
    let back = s.back_at_ms.load(Ordering::SeqCst);
    let total = t.served + t.refused_429 + t.refused_503 + t.failures.len() as u64 + t.transport_errors_in_kill_window;
    let report = json!({
        "target": format!("{:?}", s.args.target).to_lowercase(),
        "clients": s.args.clients,
        "seconds": (elapsed * 10.0).round() / 10.0,
        "requests": total,
        "served": t.served,
        "refused_429": t.refused_429,
        "refused_503": t.refused_503,
        "failures": t.failures.len(),
        "served_per_second": (t.served as f64 / elapsed * 100.0).round() / 100.0,
        "p50_ms": (percentile(&lat, 0.5) * 10.0).round() / 10.0,
        "p99_ms": (percentile(&lat, 0.99) * 10.0).round() / 10.0,
        "rss_before_mb": rss_before_kb / 1024,
        "peak_rss_mb": peak_rss_kb.load(Ordering::SeqCst) / 1024,
        "kill": if killed == u64::MAX { Value::Null } else { json!({
            "killed_at_ms": killed,
            "served_again_at_ms": if back == u64::MAX { Value::Null } else { json!(back) },
            "transport_errors_in_window": t.transport_errors_in_kill_window,
        })},
        "acknowledged_documents": docs.len(),
        "lost_documents": lost.len(),
    });
    println!("{report}");
    for f in t.failures.iter().take(10) {
        eprintln!("load-test: FAILURE {f}");
    }
    for l in lost.iter().take(10) {
        eprintln!("load-test: LOST {l}");
    }
    let mut bad = !t.failures.is_empty() || !lost.is_empty() || t.served == 0;
    if killed != u64::MAX && back == u64::MAX {
        eprintln!("load-test: the service never served a request after the restart");
        bad = true;
    }
    if bad {
        std::process::exit(1);
    }
    Ok(())
}
