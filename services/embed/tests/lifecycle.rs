//! voice-embed across restarts and crashes, on both stores, and under overload.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use voice_testkit::{client, Server, Service};

static SVC: Service = Service::new(env!("CARGO_BIN_EXE_voice-embed"), "VOICE_EMBED");

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{}{path}", s.http)).json(&body).send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(format!("{}{path}", s.http)).send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn temp_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("voice-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.display().to_string()
}

fn doc(i: usize) -> Value {
    let topics = ["trains", "coffee", "taxes", "gardening", "bicycles"];
    json!({"id": format!("doc-{i:04}"), "text": format!("# Note {i}\n\nThis note number {i} is about {}. It was written on day {i}.", topics[i % 5]),
           "metadata": {"i": i}})
}

fn top_ids(s: &Server, collection: &str, query: &str) -> Vec<(String, u64)> {
    let (st, r) = post(s, &format!("/v1/collections/{collection}/search"), json!({"query": query, "top_k": 3}));
    assert_eq!(st, 200, "{r}");
    r["data"].as_array().unwrap().iter().map(|h| (h["doc_id"].as_str().unwrap().to_string(), h["chunk_index"].as_u64().unwrap())).collect()
}

#[test]
fn restart_keeps_everything_and_kill_9_loses_no_acknowledged_document() {
    let dir = temp_dir("persist");
    let args = ["--data-dir", dir.as_str()];
    let mut s = SVC.start(&args, &[]);
    let docs: Vec<Value> = (0..20).map(doc).collect();
    assert_eq!(post(&s, "/v1/collections/notes/documents", json!({"documents": docs})).0, 200);
    let before = top_ids(&s, "notes", "what was written about coffee");
    let (_, info_before) = get(&s, "/v1/collections/notes");

    // Graceful restart.
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(30)).success());
    drop(s);
    let s = SVC.start(&args, &[]);
    assert_eq!(get(&s, "/v1/collections/notes").1, info_before);
    assert_eq!(top_ids(&s, "notes", "what was written about coffee"), before);

    // Bulk ingest from 2 clients, one document per request, then kill -9 mid-stream.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let http = s.http.clone();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (acked, stop, http) = (acked.clone(), stop.clone(), http.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let mut i = 1000 + w * 10_000;
                while !stop.load(Ordering::SeqCst) {
                    let d = doc(i);
                    let id = d["id"].as_str().unwrap().to_string();
                    match c.post(format!("{http}/v1/collections/notes/documents")).json(&json!({"documents": [d]})).send() {
                        Ok(r) if r.status().as_u16() == 200 => acked.lock().unwrap().push(id),
                        Ok(r) => panic!("ingest answered {} before the kill", r.status()),
                        Err(_) => return, // the server died under this request: not acknowledged
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    while acked.lock().unwrap().len() < 25 {
        assert!(start.elapsed() < Duration::from_secs(120), "bulk ingest too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.sigkill();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    drop(s);
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} documents acknowledged before kill -9", acked.len());

    let s = SVC.start(&args, &[]);
    for id in &acked {
        let (st, d) = get(&s, &format!("/v1/collections/notes/documents/{id}"));
        assert_eq!(st, 200, "acknowledged document {id} lost after kill -9");
        assert_eq!(d["chunks"], 1);
    }
    let (_, info) = get(&s, "/v1/collections/notes");
    assert!(info["documents"].as_u64().unwrap() >= 20 + acked.len() as u64);
    // Still searchable, and the original documents rank as before among themselves.
    let (st, r) = post(&s, "/v1/collections/notes/search", json!({"query": "note number 1003", "top_k": 5, "mode": "lexical"}));
    assert_eq!(st, 200);
    assert!(!r["data"].as_array().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn postgres_store_serves_the_same_api_and_survives_restart() {
    let pg = voice_testkit::postgres::Postgres::start();
    let args = ["--store", "postgres", "--pg-url", pg.url.as_str()];
    let mut s = SVC.start(&args, &[]);
    let docs: Vec<Value> = (0..15).map(doc).collect();
    let (st, r) = post(&s, "/v1/collections/pgnotes/documents", json!({"documents": docs}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(post(&s, "/v1/collections/pgnotes/documents", json!({"documents": docs})).1["documents"][0]["status"], "unchanged");
    let before = top_ids(&s, "pgnotes", "gardening notes");
    assert!(
        before.iter().all(|(d, _)| {
            let i: usize = d.trim_start_matches("doc-").parse().unwrap();
            i % 5 == 3
        }),
        "{before:?}"
    );
    let (_, filtered) = post(&s, "/v1/collections/pgnotes/search", json!({"query": "notes", "top_k": 20, "filter": {"i": {"$lt": 4}}}));
    assert_eq!(filtered["data"].as_array().unwrap().len(), 4, "{filtered}");
    assert_eq!(get(&s, "/v1/collections").1["backend"], "postgres");
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(30)).success());
    drop(s);
    let s = SVC.start(&args, &[]);
    assert_eq!(top_ids(&s, "pgnotes", "gardening notes"), before);
    assert_eq!(get(&s, "/v1/collections/pgnotes").1["documents"], 15);
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_never_5xx() {
    let dir = temp_dir("busy");
    let s = SVC.start(&["--data-dir", dir.as_str(), "--max-queue", "1", "--max-batch-tokens", "512"], &[]);
    let url = format!("{}/v1/embeddings", s.http);
    let long = "the quick brown fox jumps over the lazy dog ".repeat(25);
    let results: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (url, long) = (url.clone(), long.clone());
                scope.spawn(move || {
                    let r = client().post(&url).json(&json!({"input": vec![long; 32]})).send().unwrap();
                    (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + busy.len(), results.len(), "only 200 or 429: {results:?}");
    assert!(ok >= 1 && !busy.is_empty(), "{results:?}");
    assert!(busy.iter().all(|r| r.1.is_some()), "429 without Retry-After");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rolling update on one volume: the new process is ready (embeddings work) while the old one
/// still holds the embedded store, answers 503 + Retry-After for retrieval meanwhile, and opens
/// the store once the old process has exited.
#[test]
fn a_second_process_waits_for_the_store_and_takes_over() {
    let dir = temp_dir("handover");
    let args = ["--data-dir", dir.as_str()];
    let mut old = SVC.start(&args, &[]);
    assert_eq!(post(&old, "/v1/collections/notes/documents", json!({"documents": [doc(1)]})).0, 200);

    let new = SVC.start(&args, &[]);
    assert_eq!(post(&new, "/v1/embeddings", json!({"input": "still serving embeddings"})).0, 200);
    let r = client().get(format!("{}/v1/collections", new.http)).send().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(new.readyz()["components"]["store"]["status"], "retrying");

    old.sigterm();
    assert!(old.wait_exit(Duration::from_secs(30)).success());
    let start = Instant::now();
    loop {
        let (st, info) = get(&new, "/v1/collections/notes");
        if st == 200 {
            assert_eq!(info["documents"], 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the new process never opened the store: {st} {info}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(new.readyz()["components"]["store"]["status"], "open");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bearer keys from a flag and a file: API requests need one (HTTP 401 in OpenAI's shape, gRPC
/// UNAUTHENTICATED), probes and metrics stay open, and no key reaches the logs.
#[test]
fn api_keys_guard_http_and_grpc_and_never_reach_the_logs() {
    let dir = temp_dir("auth");
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = format!("{dir}/keys");
    std::fs::write(&key_file, "# rotated 2026-11\nfile-key-7f3a9c\n").unwrap();
    let data = format!("{dir}/data");
    let s = SVC.start(&["--data-dir", data.as_str(), "--api-key", "flag-key-51be02", "--api-key-file", key_file.as_str()], &[]);
    let url = format!("{}/v1/embeddings", s.http);
    let body = json!({"input": "hello"});
    let send = |auth: Option<&str>| {
        let mut r = client().post(&url).json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        voice_testkit::reply(r.send().unwrap())
    };
    voice_testkit::assert_error(&send(None), 401, "API key");
    voice_testkit::assert_error(&send(Some("Bearer wrong-key")), 401, "API key");
    voice_testkit::assert_error(&send(Some("flag-key-51be02")), 401, "API key");
    assert_eq!(send(Some("Bearer flag-key-51be02")).0, 200);
    assert_eq!(send(Some("Bearer file-key-7f3a9c")).0, 200);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(client().get(format!("{}{open}", s.http)).send().unwrap().status().as_u16(), 200, "{open}");
    }
    assert!(voice_testkit::metric(&s.http, "voice_embed_rejected_requests_total", "reason=\"unauthorized\"") >= 3.0);

    use voice_proto::embed::v1::{embeddings_client::EmbeddingsClient, EmbedRequest};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = EmbeddingsClient::connect(s.grpc.clone()).await.unwrap();
        let e = c.embed(EmbedRequest { input: vec!["hi".into()], no_truncate: false }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut req = tonic::Request::new(EmbedRequest { input: vec!["hi".into()], no_truncate: false });
        req.metadata_mut().insert("authorization", "Bearer file-key-7f3a9c".parse().unwrap());
        assert_eq!(c.embed(req).await.unwrap().into_inner().data.len(), 1);
    });
    let log = s.log_text();
    assert!(!log.is_empty());
    for secret in ["flag-key-51be02", "file-key-7f3a9c"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
