//! Start-up and shutdown of `voice-llm`: CUDA failure falls back to the CPU (fault injection,
//! runs without a GPU), structured JSON logs, SIGTERM finishes the streams in flight then exits 0.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn cuda_init_failure_falls_back_to_cpu_and_logs_json() {
    let s = start(&["--model", MODEL, "--device", "cuda"], &[("VOICE_FAULT_CUDA_INIT", "1")]);
    let r = s.readyz();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["requested_device"], "cuda:0");
    let v = ok_json(&post_json(
        &s.http,
        "/v1/completions",
        &json!({"prompt": plain_chatml("What is the capital of France?"), "max_tokens": 12, "temperature": 0}),
    ));
    assert!(v["choices"][0]["text"].as_str().unwrap().contains("Paris"));
    assert_eq!(metric(&s.http, "voice_llm_device_info", "device=\"cpu\",requested=\"cuda:0\""), 1.0);
    // Every log line is one JSON object.
    let log = s.log_text();
    s.assert_fallback_from_injected_cuda_init();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

/// SIGTERM while a stream runs: the stream completes with [DONE], new work is refused, exit 0.
#[test]
fn sigterm_finishes_streams_in_flight() {
    let mut s = start(&["--model", MODEL], &[]);
    let http = s.http.clone();
    let req = std::thread::spawn(move || {
        post_json(&http, "/v1/completions", &json!({"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0.7, "seed": 3, "stream": true}))
    });
    std::thread::sleep(Duration::from_millis(700));
    s.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    let refused = client().get(format!("{}/readyz", s.http)).send();
    assert!(refused.map(|r| r.status().as_u16() == 503).unwrap_or(true), "readyz still green while draining");
    let r = req.join().unwrap();
    assert_eq!(r.0, 200, "{}", r.2);
    let chunks = sse_chunks(&r.2);
    let last = chunks.iter().rev().find(|c| c["choices"][0]["finish_reason"].is_string()).expect("a finish reason");
    assert!(["length", "stop"].contains(&last["choices"][0]["finish_reason"].as_str().unwrap()));
    assert!(chunks.len() > 10, "the stream was cut short: {} chunks", chunks.len());
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}");
}
