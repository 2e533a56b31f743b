//! Test helpers for `voice-stt`: the binary under the shared harness (voice-testkit), the JFK
//! sample, a WAV writer, multipart requests.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub use voice_testkit::{assert_error, client, free_port, raw_request, Server, SharedServer};

static STT: voice_testkit::Service = voice_testkit::Service::new(env!("CARGO_BIN_EXE_voice-stt"), "VOICE_STT");

/// Start a `voice-stt` of its own for this test.
pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    STT.start(args, envs)
}

/// The `voice-stt` shared by this test binary's tests.
pub fn shared(args: &'static [&'static str]) -> &'static SharedServer {
    STT.shared(args)
}

/// The JFK sample (fetched into the model cache on first use).
pub fn jfk_path() -> PathBuf {
    voice_models::Fetcher::new(None).resolve("jfk-sample", true, &[]).expect("fetch jfk-sample").dir.join("jfk.wav")
}

pub fn jfk_bytes() -> Vec<u8> {
    std::fs::read(jfk_path()).unwrap()
}

pub fn jfk_pcm() -> Vec<f32> {
    voice_runtime::audio::decode_to_rate(&jfk_bytes(), 16_000, 60.0).unwrap().samples
}

/// JFK's words, normalised: what every correct transcript must contain.
pub const JFK_WORDS: &str = "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

pub fn assert_jfk(text: &str) {
    let (errors, words) = voice_whisper::eval::word_errors(JFK_WORDS, text);
    assert!(errors <= 1, "expected the JFK sentence, got {text:?} ({errors}/{words} word errors)");
}

/// A WAV writer for any layout the tests need.
pub fn wav(samples_per_channel: &[Vec<f32>], rate: u32, format: SampleFormat) -> Vec<u8> {
    let channels = samples_per_channel.len() as u16;
    let frames = samples_per_channel[0].len();
    let (tag, bits): (u16, u16) = match format {
        SampleFormat::U8 => (1, 8),
        SampleFormat::S16 => (1, 16),
        SampleFormat::S24 => (1, 24),
        SampleFormat::F32 => (3, 32),
    };
    let block = channels * bits / 8;
    let data_len = frames * block as usize;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block as u32).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for i in 0..frames {
        for ch in samples_per_channel {
            let s = ch[i].clamp(-1.0, 1.0);
            match format {
                SampleFormat::U8 => out.push(((s * 127.0).round() as i32 + 128) as u8),
                SampleFormat::S16 => out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes()),
                SampleFormat::S24 => out.extend_from_slice(&(((s * 8_388_607.0).round() as i32).to_le_bytes())[..3]),
                SampleFormat::F32 => out.extend_from_slice(&s.to_le_bytes()),
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum SampleFormat {
    U8,
    S16,
    S24,
    F32,
}

/// POST a multipart transcription request; returns (status, headers, body).
pub fn transcribe(base: &str, file: Option<(Vec<u8>, &str)>, fields: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut form = reqwest::blocking::multipart::Form::new();
    if let Some((bytes, name)) = file {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()));
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = client().post(format!("{base}/v1/audio/transcriptions")).multipart(form).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().unwrap())
}
