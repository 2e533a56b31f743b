//! The OpenAI-compatible HTTP API of `voice-stt`, against the real binary and the real
//! whisper-tiny.en weights: response formats, audio layouts and containers, every bad input the
//! issue lists (each a clear 4xx, the service keeps serving), concurrency and backpressure.

mod common;

use std::{process::Command, time::Duration};

use common::*;

const ARGS: &[&str] = &["--model", "whisper-tiny.en", "--max-concurrency", "2", "--max-body-bytes", "8MB", "--max-audio-seconds", "60"];

fn base() -> &'static str {
    &shared(ARGS).http
}

fn ok_text(resp: &(u16, reqwest::header::HeaderMap, String)) -> String {
    assert_eq!(resp.0, 200, "status {} body {}", resp.0, resp.2);
    let v: serde_json::Value = serde_json::from_str(&resp.2).unwrap();
    v["text"].as_str().unwrap().to_string()
}

#[test]
fn response_formats() {
    let jfk = jfk_bytes();
    let json = transcribe(base(), Some((jfk.clone(), "jfk.wav")), &[("model", "whisper-tiny.en")]);
    assert_jfk(&ok_text(&json));

    let text = transcribe(base(), Some((jfk.clone(), "jfk.wav")), &[("model", "whisper-1"), ("response_format", "text")]);
    assert_eq!(text.0, 200);
    assert!(text.1["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_jfk(&text.2);

    let srt = transcribe(base(), Some((jfk.clone(), "jfk.wav")), &[("response_format", "srt")]);
    assert_eq!(srt.0, 200);
    assert!(srt.2.starts_with("1\n00:00:00,000 --> "), "{}", srt.2);
    assert_jfk(&srt.2.lines().filter(|l| !l.contains("-->") && l.parse::<u32>().is_err()).collect::<Vec<_>>().join(" "));

    let vtt = transcribe(base(), Some((jfk.clone(), "jfk.wav")), &[("response_format", "vtt")]);
    assert_eq!(vtt.0, 200);
    assert!(vtt.2.starts_with("WEBVTT\n\n00:00:00.000 --> "), "{}", vtt.2);

    let verbose = transcribe(
        base(),
        Some((jfk, "jfk.wav")),
        &[("response_format", "verbose_json"), ("timestamp_granularities[]", "segment"), ("language", "en")],
    );
    assert_eq!(verbose.0, 200, "{}", verbose.2);
    let v: serde_json::Value = serde_json::from_str(&verbose.2).unwrap();
    assert_eq!(v["language"], "english");
    assert!((v["duration"].as_f64().unwrap() - 11.0).abs() < 0.1, "{}", v["duration"]);
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    let mut last_end = 0.0;
    for s in segs {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= last_end - 1e-6 && end > start && end <= 11.1, "bad segment times {s}");
        last_end = end;
    }
    assert_jfk(v["text"].as_str().unwrap());
}

#[test]
fn models_endpoint() {
    let r = client().get(format!("{}/v1/models", base())).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"whisper-tiny.en"), "{ids:?}");
    let r = client().get(format!("{}/v1/models/nope", base())).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

fn jfk_channels(rate: u32, channels: usize) -> Vec<Vec<f32>> {
    let pcm = voice_runtime::audio::resample(&jfk_pcm(), 16_000, rate).unwrap();
    // Different gains per channel so a wrong down-mix would show.
    (0..channels).map(|c| pcm.iter().map(|s| s * (0.6 + 0.1 * c as f32)).collect()).collect()
}

#[test]
fn audio_layouts_that_must_work() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("8-bit unsigned", wav(&jfk_channels(16_000, 1), 16_000, SampleFormat::U8)),
        ("32-bit float", wav(&jfk_channels(16_000, 1), 16_000, SampleFormat::F32)),
        ("24-bit", wav(&jfk_channels(22_050, 1), 22_050, SampleFormat::S24)),
        ("96 kHz", wav(&jfk_channels(96_000, 1), 96_000, SampleFormat::S16)),
        ("6 channels", wav(&jfk_channels(48_000, 6), 48_000, SampleFormat::S16)),
    ];
    for (name, bytes) in cases {
        let r = transcribe(base(), Some((bytes, "a.wav")), &[]);
        assert_eq!(r.0, 200, "{name}: {}", r.2);
        let text = ok_text(&r);
        let (errors, _) = voice_whisper::eval::word_errors(JFK_WORDS, &text);
        assert!(errors <= 1, "{name}: {text}");
    }
}

/// FLAC, MP3 and Ogg Vorbis made from the JFK sample with Debian's encoders.
#[test]
fn compressed_containers() {
    let dir = std::env::temp_dir().join(format!("stt-codecs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = jfk_path();
    let run = |prog: &str, args: &[&str]| {
        let st =
            Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog} is required (apt-get install flac lame vorbis-tools): {e}"));
        assert!(st.status.success(), "{prog} failed: {}", String::from_utf8_lossy(&st.stderr));
    };
    let s = src.to_str().unwrap();
    let flac = dir.join("jfk.flac");
    let mp3 = dir.join("jfk.mp3");
    let ogg = dir.join("jfk.ogg");
    run("flac", &["-s", "-f", "-o", flac.to_str().unwrap(), s]);
    run("lame", &["--quiet", "-b", "64", s, mp3.to_str().unwrap()]);
    run("oggenc", &["-Q", "-q", "4", "-o", ogg.to_str().unwrap(), s]);
    for p in [flac, mp3, ogg] {
        let r = transcribe(base(), Some((std::fs::read(&p).unwrap(), p.file_name().unwrap().to_str().unwrap())), &[]);
        let text = ok_text(&r);
        let (errors, _) = voice_whisper::eval::word_errors(JFK_WORDS, &text);
        assert!(errors <= 1, "{}: {text}", p.display());
    }
}

#[test]
fn bad_inputs_are_clear_4xx_and_the_service_keeps_serving() {
    let jfk = jfk_bytes();
    // Empty file.
    assert_error(&transcribe(base(), Some((vec![], "a.wav")), &[]), 400, "empty");
    // Random bytes (fixed seed).
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let random: Vec<u8> = (0..50_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    assert_error(&transcribe(base(), Some((random, "noise.bin")), &[]), 400, "audio");
    // Truncated WAV: cut in the middle of the samples.
    assert_error(&transcribe(base(), Some((jfk[..jfk.len() / 2].to_vec(), "cut.wav")), &[]), 400, "truncated");
    // Lying header: claims 44.1 kHz while the byte rate says 16 kHz.
    let mut lie = jfk.clone();
    lie[24..28].copy_from_slice(&44_100u32.to_le_bytes());
    assert_error(&transcribe(base(), Some((lie, "lie.wav")), &[]), 400, "inconsistent");
    // 0 samples.
    let empty = wav(&[vec![]], 16_000, SampleFormat::S16);
    assert_error(&transcribe(base(), Some((empty, "zero.wav")), &[]), 400, "no samples");
    // Over-size upload (limit 8 MB): refused from the Content-Length, before the body is read.
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: {}\r\n\r\n",
        9_000_000
    );
    let (status, body) = raw_request(base(), &head, b"--XX\r\n");
    assert_error(&(status, Default::default(), body), 413, "exceeds");
    // The same without a Content-Length (chunked): refused once 8 MB have been read.
    let head =
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut body = Vec::new();
    let part = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n";
    body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
    body.extend_from_slice(part);
    body.extend_from_slice(b"\r\n");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..9 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    let (status, text) = raw_request(base(), head, &body);
    assert_eq!(status, 413, "chunked over-size upload: {status} {text}");
    // Over-long audio (limit 60 s): 70 s of quiet noise.
    let long = wav(&[vec![0.001; 16_000 * 70]], 16_000, SampleFormat::S16);
    assert_error(&transcribe(base(), Some((long, "long.wav")), &[]), 413, "longer than");
    // Unknown model.
    assert_error(&transcribe(base(), Some((jfk.clone(), "a.wav")), &[("model", "whisper-huge-v9")]), 404, "does not exist");
    // Unknown response_format.
    assert_error(&transcribe(base(), Some((jfk.clone(), "a.wav")), &[("response_format", "xml")]), 400, "response_format");
    // Missing file field.
    assert_error(&transcribe(base(), None, &[("model", "whisper-tiny.en")]), 400, "missing multipart field `file`");
    // Not multipart at all.
    let r = client().post(format!("{}/v1/audio/transcriptions", base())).body("hello").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Out-of-range temperature, unsupported granularity, language the model lacks.
    assert_error(&transcribe(base(), Some((jfk.clone(), "a.wav")), &[("temperature", "7")]), 400, "temperature");
    assert_error(&transcribe(base(), Some((jfk.clone(), "a.wav")), &[("timestamp_granularities[]", "word")]), 400, "granularity");
    assert_error(&transcribe(base(), Some((jfk.clone(), "a.wav")), &[("language", "de")]), 400, "english-only");

    // Still alive and still right.
    assert_eq!(client().get(format!("{}/healthz", base())).send().unwrap().status().as_u16(), 200);
    assert_jfk(&ok_text(&transcribe(base(), Some((jfk, "a.wav")), &[])));
}

#[test]
fn sixteen_concurrent_requests_are_all_correct() {
    let jfk = jfk_bytes();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let jfk = jfk.clone();
            std::thread::spawn(move || transcribe(base(), Some((jfk, "jfk.wav")), &[]))
        })
        .collect();
    for h in handles {
        assert_jfk(&ok_text(&h.join().unwrap()));
    }
}

/// A full queue answers 429 with Retry-After at once; everything admitted is served correctly.
#[test]
fn full_queue_is_refused_with_retry_after() {
    let s = start(&["--model", "whisper-tiny.en", "--max-concurrency", "1", "--max-queue", "1"], &[]);
    let jfk = jfk_bytes();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (jfk, http) = (jfk.clone(), s.http.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20 * i));
                transcribe(&http, Some((jfk, "jfk.wav")), &[])
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for h in handles {
        let r = h.join().unwrap();
        match r.0 {
            200 => {
                assert_jfk(&ok_text(&r));
                served += 1;
            }
            429 => {
                assert!(r.1.get("retry-after").is_some(), "429 without Retry-After");
                assert_error(&r, 429, "busy");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", r.2),
        }
    }
    assert!(served >= 2 && refused >= 1, "served {served}, refused {refused}");
}
