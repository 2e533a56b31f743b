//! Helpers the benchmark binaries share (each binary includes this file as a module).
// Not every binary uses every helper.
#![allow(dead_code)]

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `VmHWM:` = peak), in MB.
pub fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The questions agent-bench asks (spoken by Kokoro voices) and stt-rtf transcribes with the
/// same voices, so the STT figures are measured on the agent's own workload.
pub const AGENT_QUESTIONS: [&str; 10] = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Can you name a large ocean?",
    "What do bees make?",
    "How many days are in a week?",
    "What is the largest planet in our solar system?",
    "Which animal is known as the king of the jungle?",
];

/// The voice agent-bench speaks question `i` in.
pub fn agent_question_voice(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "am_adam"
    } else {
        "bf_emma"
    }
}

/// Kokoro-82M (the registry's int8 ONNX weights) on the CPU, to speak test sentences in process.
pub struct Speaker {
    kokoro: voice_kokoro::Kokoro,
    voices: voice_kokoro::voices::Voices,
    g2p: voice_g2p::G2p,
}

impl Speaker {
    pub fn load() -> anyhow::Result<Self> {
        use anyhow::Context;
        let dir = voice_models::Fetcher::new(None).resolve("kokoro-82m", true, &[]).context("fetching kokoro-82m")?.dir;
        let dev = candle_core::Device::Cpu;
        Ok(Self {
            kokoro: voice_kokoro::Kokoro::new(&voice_kokoro::Weights::from_onnx(&dir.join("model.onnx"), &dev)?, &dev)?,
            voices: voice_kokoro::voices::Voices::load_dir(&dir.join("voices"))?,
            g2p: voice_g2p::G2p::load(&dir, voice_g2p::Variant::Us)?,
        })
    }

    /// `text` in `voice`, piece by piece as voice-tts splits it, at `rate` Hz.
    pub fn speak(&self, text: &str, voice: &str, rate: u32) -> anyhow::Result<Vec<f32>> {
        let pack = self.voices.resolve(voice).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut audio = Vec::new();
        for piece in self.g2p.pieces(text, voice_kokoro::CONTEXT_LENGTH - 2, 8)? {
            let ids = self.g2p.vocab().encode_padded(&piece.phonemes);
            audio.extend(self.kokoro.forward(&ids, pack.style(ids.len() - 2), 1.0)?.audio);
        }
        Ok(voice_runtime::audio::resample(&audio, voice_kokoro::SAMPLE_RATE, rate)?)
    }
}

/// RMS of 10 ms windows of 16 kHz audio.
pub fn window_rms(a: &[f32]) -> Vec<f32> {
    a.chunks(160).map(|w| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt()).collect()
}

/// 16 kHz audio up to its last 10 ms window louder than 5 % of the loudest: the speech without
/// its trailing quiet.
pub fn trim_end(a: &[f32]) -> &[f32] {
    let rms = window_rms(a);
    let peak = rms.iter().fold(0f32, |m, &v| m.max(v));
    let last = rms.iter().rposition(|&v| v > 0.05 * peak).map_or(0, |i| i + 1);
    &a[..(last * 160).min(a.len())]
}

/// The median (upper middle for an even count) of a non-empty sample.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Which voice-ai service `load-test` and `http-fuzz` talk to: it decides their requests and
/// what a correct answer is.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Target {
    Stt,
    Llm,
    Tts,
    Embed,
    Agent,
}
