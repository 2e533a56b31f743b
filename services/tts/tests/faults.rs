//! The GPU failure paths of the real `voice-tts` binary, through the runtime's fault-injection
//! switches (no GPU needed): CUDA that does not initialise -> CPU; a device error mid-request ->
//! degraded, that request served by a CPU copy of Kokoro, later ones too.

use serde_json::json;
use voice_testkit::{client, metric, Service};

static SVC: Service = Service::new(env!("CARGO_BIN_EXE_voice-tts"), "VOICE_TTS");

/// Synthesize a sentence; the WAV must hold speech (not silence, not a stub).
fn speak(base: &str) {
    let r = client()
        .post(format!("{base}/v1/audio/speech"))
        .json(&json!({"input": "The capital of France is Paris.", "voice": "af_heart", "response_format": "wav"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let pcm = voice_runtime::audio::decode(&r.bytes().unwrap(), 60.0).unwrap();
    let rms = (pcm.samples.iter().map(|x| x * x).sum::<f32>() / pcm.samples.len() as f32).sqrt();
    assert!(pcm.duration_secs() > 1.0 && rms > 0.02, "{} s, rms {rms}", pcm.duration_secs());
}

#[test]
fn cuda_init_failure_then_a_device_error_mid_request() {
    let s = SVC.start(&["--device", "cuda"], &[("VOICE_FAULT_CUDA_INIT", "1"), ("VOICE_FAULT_DEVICE_ERROR_AT", "2")]);
    let r = s.readyz();
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["requested_device"], "cuda:0");
    s.assert_fallback_from_injected_cuda_init();
    speak(&s.http);
    assert_eq!(s.readyz()["degraded"], false);
    // The second synthesis hits the injected fault; it is retried on a CPU copy and still speaks.
    speak(&s.http);
    let r = s.readyz();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["degraded"], true);
    assert!(r["degraded_reason"].as_str().unwrap().contains("simulated device fault"), "{r}");
    assert_eq!(metric(&s.http, "voice_tts_degraded", ""), 1.0);
    assert!(metric(&s.http, "voice_tts_cpu_fallback_requests_total", "") >= 1.0);
    speak(&s.http);
}
