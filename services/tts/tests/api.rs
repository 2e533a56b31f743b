//! voice-tts over HTTP and gRPC with the real model and front end: every bad input the issue
//! lists, streaming (first audio before the rest), formats, blends, gRPC streaming and
//! cancellation, metrics.

use std::{
    io::Read,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use voice_testkit::{assert_error, client, Service, SharedServer};

static SVC: Service = Service::new(env!("CARGO_BIN_EXE_voice-tts"), "VOICE_TTS");

fn server() -> &'static SharedServer {
    // Streaming inside a piece on (off by default), so the gRPC test sees chunks.
    SVC.shared(&["--max-input-chars", "20000", "--first-chunk-frames", "16"])
}

fn speech(body: Value) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let r = client().post(format!("{}/v1/audio/speech", server().http)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.bytes().unwrap().to_vec(), headers)
}

fn error_of(status: u16, body: &[u8]) -> (u16, Value) {
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}

fn assert_err(body: Value, status: u16, needle: &str) {
    let (s, b, _) = speech(body.clone());
    let (s, v) = error_of(s, &b);
    assert_eq!(s, status, "{body}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{body}: message {msg:?} lacks {needle:?}");
}

/// Samples of a WAV with streaming sizes (or exact ones): the data after the 44-byte header.
fn wav_samples(bytes: &[u8]) -> Vec<f32> {
    assert!(bytes.len() >= 44, "WAV shorter than its header");
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1, "PCM");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 1, "mono");
    assert_eq!(u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]), 24_000);
    assert_eq!(u16::from_le_bytes([bytes[34], bytes[35]]), 16);
    assert_eq!(&bytes[36..40], b"data");
    let data = &bytes[44..];
    assert_eq!(data.len() % 2, 0);
    voice_runtime::audio::s16le_to_f32(data)
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

#[test]
fn speech_is_a_valid_wav_of_plausible_length() {
    let (s, b, h) = speech(json!({"model": "tts-1", "input": "The weather is lovely today.", "voice": "af_heart"}));
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "audio/wav");
    let x = wav_samples(&b);
    let secs = x.len() as f32 / 24_000.0;
    // Six words: well over half a second and under five.
    assert!((0.8..5.0).contains(&secs), "{secs} s");
    assert!(rms(&x) > 0.01, "silent output: rms {}", rms(&x));
    assert!(h.contains_key("x-time-to-first-audio-ms"));
}

#[test]
fn pcm_format_and_speed() {
    let text = "Speaking faster makes the audio shorter.";
    let (s1, normal, _) = speech(json!({"input": text, "response_format": "pcm", "speed": 1.0}));
    let (s2, fast, h) = speech(json!({"input": text, "response_format": "pcm", "speed": 2.0}));
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(h["content-type"], "audio/pcm");
    assert_eq!(normal.len() % 2, 0);
    let ratio = fast.len() as f32 / normal.len() as f32;
    assert!((0.35..0.7).contains(&ratio), "speed 2 gave {ratio} of the length");
}

#[test]
fn blends_and_british_voices() {
    let text = "A blend of two voices.";
    let get = |voice: &str| {
        let (s, b, _) = speech(json!({"input": text, "voice": voice, "response_format": "pcm"}));
        assert_eq!(s, 200, "{voice}");
        voice_runtime::audio::s16le_to_f32(&b)
    };
    let a = get("af_heart");
    let m = get("am_adam");
    let blend = get("af_heart:0.5+am_adam:0.5");
    assert!(blend != a && blend != m, "a blend must differ from both voices");
    let gb = get("bf_emma");
    assert!(rms(&gb) > 0.01);
    // OpenAI's voice names speak with the Kokoro voice they map to (any case).
    assert_eq!(get("alloy"), get("af_alloy"));
    assert_eq!(get("Fable"), get("bm_fable"));
    assert_eq!(get("ash"), m);
}

#[test]
fn streams_first_sentence_before_the_rest() {
    let text = "This is the first sentence. Here comes a second, somewhat longer sentence that takes a while to say. \
                And a third one closes the paragraph with a few more words than the others.";
    let started = Instant::now();
    let mut r = client().post(format!("{}/v1/audio/speech", server().http)).json(&json!({"input": text})).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut buf = vec![0u8; 4096];
    let n = r.read(&mut buf).unwrap();
    let first = started.elapsed();
    assert!(n > 44);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    let total = started.elapsed();
    let audio_secs = (n + rest.len() - 44) as f64 / 48_000.0;
    eprintln!("first bytes after {first:?}, all after {total:?}, {audio_secs:.1} s of audio");
    assert!(audio_secs > 6.0, "{audio_secs}");
    // The first of three sentences is a small share of the work.
    assert!(first.as_secs_f64() < 0.6 * total.as_secs_f64(), "first audio {first:?} of {total:?}");
}

#[test]
fn bad_inputs() {
    assert_err(json!({"input": ""}), 400, "empty");
    assert_err(json!({"input": "   \n\t "}), 400, "empty");
    assert_err(json!({}), 400, "required");
    assert_err(json!({"input": "a".repeat(200_000)}), 413, "limit is 20000");
    assert_err(json!({"input": "hi", "voice": "zz_nobody"}), 400, "unknown voice");
    assert_err(json!({"input": "hi", "voice": "af_heart:0.5+"}), 400, "voice");
    assert_err(json!({"input": "hi", "voice": "af_heart:abc"}), 400, "not a number");
    assert_err(json!({"input": "hi", "voice": "af_heart:-1+am_adam"}), 400, "positive");
    assert_err(json!({"input": "hi", "speed": 0.1}), 400, "speed");
    assert_err(json!({"input": "hi", "speed": 5}), 400, "speed");
    assert_err(json!({"input": "hi", "response_format": "mp3"}), 400, "not available");
    assert_err(json!({"input": "hi", "response_format": "ogg"}), 400, "unknown response_format");
    assert_err(json!({"input": "hi", "model": "some-other-model"}), 404, "some-other-model");
    assert_err(json!({"input": "hi", "bogus": 1}), 400, "bogus");
    // Only emoji / only another script: nothing speakable.
    assert_err(json!({"input": "😀🎉👍"}), 400, "nothing speakable");
    assert_err(json!({"input": "日本語のテキスト"}), 400, "nothing speakable");
    let r = client().post(format!("{}/v1/audio/speech", server().http)).header("content-type", "application/json").body("{not json").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn odd_but_speakable_inputs_are_spoken() {
    // Control characters, emoji and other scripts are dropped; markup is stripped, not read.
    let base = {
        let (s, b, _) = speech(json!({"input": "Hello world.", "response_format": "pcm"}));
        assert_eq!(s, 200);
        b.len()
    };
    for input in ["Hello\u{0007} world\u{0000}.", "Hello 👋 world 🌍.", "Hello мир world 世界.", "<speak>Hello <break time=\"1s\"/> world.</speak>"]
    {
        let (s, b, _) = speech(json!({"input": input, "response_format": "pcm"}));
        assert_eq!(s, 200, "{input:?}: {}", String::from_utf8_lossy(&b));
        // Same words as the plain sentence: the same length within a few frames.
        let diff = (b.len() as f64 - base as f64).abs() / base as f64;
        assert!(diff < 0.2, "{input:?}: {} bytes vs {base}", b.len());
    }
}

#[test]
fn voices_and_models() {
    let v: Value = client().get(format!("{}/v1/audio/voices", server().http)).send().unwrap().json().unwrap();
    let voices = v["voices"].as_array().unwrap();
    assert_eq!(voices.len(), 54);
    assert_eq!(v["default_voice"], "af_heart");
    assert!(voices.iter().any(|x| x["id"] == "bm_george" && x["language"] == "en-gb" && x["gender"] == "male"));
    let names = v["openai_voices"].as_object().unwrap();
    assert_eq!(names["alloy"], "af_alloy");
    assert_eq!(names.len(), 13);
    // Every alias names a voice that exists.
    assert!(names.values().all(|id| voices.iter().any(|x| &x["id"] == id)), "{names:?}");
    let m: Value = client().get(format!("{}/v1/models", server().http)).send().unwrap().json().unwrap();
    assert_eq!(m["data"][0]["id"], "kokoro-82m");
    let r = client().get(format!("{}/v1/models/nope", server().http)).send().unwrap();
    assert_error(&voice_testkit::reply(r), 404, "nope");
}

#[test]
fn grpc_streams_pieces_in_order_and_can_be_cancelled() {
    use voice_proto::tts::v1::{text_to_speech_client::TextToSpeechClient, ListVoicesRequest, SynthesizeRequest};
    let before = voice_testkit::metric(&server().http, "voice_tts_cancelled_total", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TextToSpeechClient::connect(server().grpc.clone()).await.unwrap();
        let voices = c.list_voices(ListVoicesRequest {}).await.unwrap().into_inner();
        assert_eq!(voices.voices.len(), 54);

        let req =
            SynthesizeRequest { text: "One sentence here. And another one there.".into(), voice: "am_adam".into(), speed: 0.0, model: String::new() };
        let mut stream = c.synthesize(req).await.unwrap().into_inner();
        let mut chunks = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            chunks.push(m);
        }
        let last = chunks.pop().unwrap();
        assert!(last.done && last.pcm.is_empty());
        // One piece per sentence, each streamed in chunks (the first after ~400 ms of speech):
        // messages numbered in order, pieces in order, the piece's text on its first chunk.
        assert!(chunks.len() >= 4, "{} chunks for two pieces: not streamed inside a piece", chunks.len());
        let mut bytes_per_piece = [0usize; 2];
        for (i, ch) in chunks.iter().enumerate() {
            assert_eq!(ch.index as usize, i);
            assert_eq!(ch.sample_rate, 24_000);
            let first_of_piece = i == 0 || chunks[i - 1].piece != ch.piece;
            assert_eq!(!ch.text.is_empty(), first_of_piece, "chunk {i} (piece {}): text {:?}", ch.piece, ch.text);
            assert!(i == 0 || ch.piece == chunks[i - 1].piece || ch.piece == chunks[i - 1].piece + 1, "pieces out of order");
            bytes_per_piece[ch.piece as usize] += ch.pcm.len();
        }
        assert_eq!(chunks.last().unwrap().piece, 1, "one piece per sentence");
        for (i, b) in bytes_per_piece.iter().enumerate() {
            assert!(*b > 24_000, "piece {i}: {b} bytes");
        }
        assert!(chunks[0].time_to_first_audio_ms > 0.0);

        let bad = c.synthesize(SynthesizeRequest { text: String::new(), ..Default::default() }).await.err().unwrap();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let bad = c.synthesize(SynthesizeRequest { text: "hi".into(), voice: "nobody".into(), ..Default::default() }).await.err().unwrap();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);

        // Cancel after the first piece of a long text: the server stops synthesizing.
        let long = "This is a sentence that will be spoken. ".repeat(12);
        let mut stream = c.synthesize(SynthesizeRequest { text: long, ..Default::default() }).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(!first.pcm.is_empty());
        drop(stream);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while voice_testkit::metric(&server().http, "voice_tts_cancelled_total", "") <= before {
        assert!(Instant::now() < deadline, "synthesis did not stop after the client cancelled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_are_exported() {
    let (s, _, _) = speech(json!({"input": "Counting for the metrics."}));
    assert_eq!(s, 200);
    let text = client().get(format!("{}/metrics", server().http)).send().unwrap().text().unwrap();
    for name in [
        "voice_tts_time_to_first_audio_seconds_bucket",
        "voice_tts_realtime_factor_bucket",
        "voice_tts_characters_total",
        "voice_tts_characters_per_second_bucket",
        "voice_tts_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}
