//! Round trip: ten varied English sentences synthesized by voice-tts and transcribed by
//! voice-stt (registry Whisper base) over their HTTP APIs. Held: corpus word error rate <= 10%.
//! The text goes through the whole front end (numbers, abbreviations, a heteronym-free mix of
//! common and rarer words, questions and exclamations) and four voices, US and GB.

use serde_json::json;
use voice_testkit::{client, Service};

const SENTENCES: [(&str, &str); 10] = [
    ("The quick brown fox jumps over the lazy dog.", "af_heart"),
    ("Please remember to bring your umbrella tomorrow morning.", "am_adam"),
    ("How many people live in the capital city?", "bf_emma"),
    ("Our meeting has been moved to three o'clock on Friday.", "bm_george"),
    ("Fresh bread and warm soup make a perfect winter lunch.", "af_heart"),
    ("The library closes early during the summer holidays.", "am_michael"),
    ("Can you turn off the lights in the kitchen?", "af_bella"),
    ("Scientists discovered a new species of butterfly in the forest.", "bf_emma"),
    ("I would like a cup of coffee with milk, please.", "am_adam"),
    ("The train to London leaves from platform nine.", "bm_george"),
];

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .replace("o'clock", "oclock")
        .chars()
        .map(|c| if c.is_alphanumeric() || c == ' ' { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(|w| match w {
            // Whisper writes numbers as digits.
            "3" => "three".to_string(),
            "9" => "nine".to_string(),
            w => w.to_string(),
        })
        .collect()
}

/// Word-level Levenshtein distance.
fn edits(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[test]
fn ten_sentences_survive_tts_then_stt() {
    static TTS: Service = Service::new(env!("CARGO_BIN_EXE_voice-tts"), "VOICE_TTS");
    // voice-stt is built beside voice-tts by `cargo build --workspace` (scripts/test.sh).
    let stt_bin = std::path::Path::new(env!("CARGO_BIN_EXE_voice-tts")).with_file_name("voice-stt");
    assert!(stt_bin.is_file(), "{} missing: build the workspace (cargo build --workspace)", stt_bin.display());
    let stt_bin: &'static str = Box::leak(stt_bin.display().to_string().into_boxed_str());
    let stt_svc: &'static Service = Box::leak(Box::new(Service::new(stt_bin, "VOICE_STT")));
    let tts = TTS.start(&[], &[]);
    let stt = stt_svc.start(&["--model", "whisper-base"], &[]);

    let (mut errors, mut total) = (0usize, 0usize);
    for (text, voice) in SENTENCES {
        let r = client()
            .post(format!("{}/v1/audio/speech", tts.http))
            .json(&json!({"input": text, "voice": voice, "response_format": "pcm"}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{text}");
        let pcm = voice_runtime::audio::s16le_to_f32(&r.bytes().unwrap());
        // A WAV with exact sizes for the upload.
        let wav = voice_runtime::audio::encode_wav(&pcm, 24_000, 1, false);
        let form = reqwest::blocking::multipart::Form::new()
            .text("model", "whisper-1")
            .text("language", "en")
            .part("file", reqwest::blocking::multipart::Part::bytes(wav).file_name("tts.wav").mime_str("audio/wav").unwrap());
        let v: serde_json::Value = client().post(format!("{}/v1/audio/transcriptions", stt.http)).multipart(form).send().unwrap().json().unwrap();
        let heard = v["text"].as_str().unwrap_or_default().to_string();
        let (want, got) = (words(text), words(&heard));
        let e = edits(&want, &got);
        eprintln!("[{voice}] {e} edits: {text:?} -> {heard:?}");
        errors += e;
        total += want.len();
    }
    let wer = errors as f64 / total as f64;
    eprintln!("WER {:.1}% ({errors}/{total} words)", wer * 100.0);
    assert!(wer <= 0.10, "word error rate {:.1}%", wer * 100.0);
}
