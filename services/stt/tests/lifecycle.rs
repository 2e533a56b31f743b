//! Start-up, device fallback, configuration and shutdown of the real `voice-stt` binary.
//! The GPU failure paths are driven by the runtime's fault-injection switches, so they run on a
//! machine without a GPU.

mod common;

use std::time::Duration;

use common::*;

fn metrics(s: &Server) -> String {
    client().get(format!("{}/metrics", s.http)).send().unwrap().text().unwrap()
}

fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {prefix} not found in:\n{text}"))
}

#[test]
fn cuda_init_failure_falls_back_to_cpu() {
    let s = start(&["--model", "whisper-tiny.en", "--device", "cuda"], &[("VOICE_FAULT_CUDA_INIT", "1")]);
    let r = s.readyz();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["requested_device"], "cuda:0");
    s.assert_fallback_from_injected_cuda_init();
    let m = metrics(&s);
    assert_eq!(metric_value(&m, "voice_stt_device_info{device=\"cpu\",requested=\"cuda:0\"}"), 1.0);
    assert_jfk(
        serde_json::from_str::<serde_json::Value>(&transcribe(&s.http, Some((jfk_bytes(), "a.wav")), &[]).2).unwrap()["text"].as_str().unwrap(),
    );
}

#[test]
fn device_error_mid_request_degrades_and_retries_on_cpu() {
    let s = start(&["--model", "whisper-tiny.en"], &[("VOICE_FAULT_DEVICE_ERROR_AT", "2")]);
    let text = |r: (u16, reqwest::header::HeaderMap, String)| {
        assert_eq!(r.0, 200, "{}", r.2);
        serde_json::from_str::<serde_json::Value>(&r.2).unwrap()["text"].as_str().unwrap().to_string()
    };
    assert_jfk(&text(transcribe(&s.http, Some((jfk_bytes(), "a.wav")), &[])));
    assert_eq!(s.readyz()["degraded"], false);
    // The second request hits the injected device fault and is served by the CPU copy.
    assert_jfk(&text(transcribe(&s.http, Some((jfk_bytes(), "a.wav")), &[])));
    let r = s.readyz();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["degraded"], true);
    assert!(r["degraded_reason"].as_str().unwrap().contains("simulated device fault"));
    let m = metrics(&s);
    assert_eq!(metric_value(&m, "voice_stt_degraded "), 1.0);
    assert_eq!(metric_value(&m, "voice_stt_cpu_fallback_requests_total "), 1.0);
    assert_eq!(metric_value(&m, "voice_stt_device_errors_total{device=\"cpu\",phase=\"request\"}"), 1.0);
    assert!(s.log_text().contains("marking the service degraded"));
    // And it keeps serving.
    assert_jfk(&text(transcribe(&s.http, Some((jfk_bytes(), "a.wav")), &[])));
}

#[test]
fn config_file_and_environment() {
    let dir = std::env::temp_dir().join(format!("stt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("stt.toml");
    std::fs::write(&cfg, "model = \"whisper-tiny.en\"\nmax-audio-seconds = 30\nlog-format = \"json\"\n").unwrap();
    // The environment overrides the file: 5 s of audio at most.
    let s = start(&["--config", cfg.to_str().unwrap()], &[("VOICE_STT_MAX_AUDIO_SECONDS", "5")]);
    let r = transcribe(&s.http, Some((jfk_bytes(), "a.wav")), &[]);
    assert_error(&r, 413, "longer than the limit of 5 s");
    // Logs are JSON lines.
    let log = s.log_text();
    let first = log.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|_| panic!("not JSON: {first}"));
    assert!(v["level"].is_string() && v["message"].is_string());
}

#[test]
fn unknown_model_exits_with_a_clear_error() {
    let port = free_port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voice-stt"))
        .args(["--model", "no-such-model", "--port", &port, "--grpc-port", "0", "--log-format", "text"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("unknown model `no-such-model`"), "{text}");
}

/// SIGTERM while a request runs: the request completes, new connections are refused, exit 0.
#[test]
fn sigterm_drains_in_flight_requests() {
    let mut s = start(&["--model", "whisper-tiny.en"], &[]);
    // 44 s of speech (JFK four times) keeps the model busy for a while.
    let pcm = jfk_pcm();
    let long: Vec<f32> = (0..4).flat_map(|_| pcm.iter().copied()).collect();
    let body = wav(&[long], 16_000, SampleFormat::S16);
    let http = s.http.clone();
    let req = std::thread::spawn(move || transcribe(&http, Some((body, "long.wav")), &[]));
    std::thread::sleep(Duration::from_millis(800));
    s.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // No new work is accepted while draining.
    let refused = client().get(format!("{}/readyz", s.http)).send();
    assert!(refused.map(|r| r.status().as_u16() == 503).unwrap_or(true), "readyz still green while draining");
    let r = req.join().unwrap();
    assert_eq!(r.0, 200, "in-flight request was not completed: {}", r.2);
    let text = serde_json::from_str::<serde_json::Value>(&r.2).unwrap()["text"].as_str().unwrap().to_string();
    assert!(voice_whisper::eval::normalize(&text).matches("ask not").count() >= 3, "{text}");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    assert!(s.log_text().contains("drained in-flight requests"));
}
