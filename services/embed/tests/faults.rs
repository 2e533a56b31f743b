//! The GPU failure paths of the real `voice-embed` binary, through the runtime's fault-injection
//! switches (no GPU needed): CUDA that does not initialise -> CPU; a device error mid-request ->
//! degraded, the batch served by a CPU copy of the encoder with the same vectors.

use serde_json::{json, Value};
use voice_testkit::{client, metric, Service};

static SVC: Service = Service::new(env!("CARGO_BIN_EXE_voice-embed"), "VOICE_EMBED");

fn embed(base: &str) -> Vec<f64> {
    let r = client().post(format!("{base}/v1/embeddings")).json(&json!({"input": ["the office cat sleeps on the GPU server"]})).send().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn cuda_init_failure_then_a_device_error_mid_request() {
    let data = std::env::temp_dir().join(format!("voice-embed-faults-{}", std::process::id()));
    let d = data.to_string_lossy().to_string();
    let s = SVC.start(&["--device", "cuda", "--data-dir", &d], &[("VOICE_FAULT_CUDA_INIT", "1"), ("VOICE_FAULT_DEVICE_ERROR_AT", "2")]);
    let r = s.readyz();
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["requested_device"], "cuda:0");
    s.assert_fallback_from_injected_cuda_init();
    let first = embed(&s.http);
    assert_eq!(first.len(), 384);
    assert_eq!(s.readyz()["degraded"], false);
    // The second batch hits the injected fault and is recomputed on the CPU copy: same vector.
    let second = embed(&s.http);
    let max_diff = first.iter().zip(&second).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-5, "vectors differ by {max_diff}");
    let r = s.readyz();
    assert_eq!(r["degraded"], true);
    assert!(r["degraded_reason"].as_str().unwrap().contains("simulated device fault"), "{r}");
    assert_eq!(metric(&s.http, "voice_embed_degraded", ""), 1.0);
    assert!(metric(&s.http, "voice_embed_cpu_fallback_requests_total", "") >= 1.0);
    let _ = std::fs::remove_dir_all(&data);
}
