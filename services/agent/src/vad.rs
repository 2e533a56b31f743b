//! Voice activity detection for the loop: Silero VAD (voice-vad, candle) on 16 kHz audio,
//! one speech probability per 512-sample (32 ms) window.

use std::path::Path;

use anyhow::Result;

/// A loaded detector, shared by every conversation.
pub trait Vad: Send + Sync + 'static {
    /// A fresh per-conversation state (LSTM memory, partial window).
    fn stream(&self) -> Box<dyn VadStream>;
}

pub trait VadStream: Send + Sync {
    /// 16 kHz mono PCM in any length; probabilities of the windows it completed.
    fn push(&mut self, pcm: &[i16]) -> Result<Vec<f32>>;
}

pub struct Silero(voice_vad::SileroVad);

impl Silero {
    pub fn load(path: &Path) -> Result<Self> {
        // A 300 k-parameter model run every 32 ms: the CPU is the right place for it.
        Ok(Self(voice_vad::SileroVad::load(path, &candle_core::Device::Cpu)?))
    }
}

impl Vad for Silero {
    fn stream(&self) -> Box<dyn VadStream> {
        Box::new(SileroStream(voice_vad::VadStream::new(self.0.clone())))
    }
}

struct SileroStream(voice_vad::VadStream);

impl VadStream for SileroStream {
    fn push(&mut self, pcm: &[i16]) -> Result<Vec<f32>> {
        let samples: Vec<f32> = pcm.iter().map(|&s| voice_runtime::audio::s16_to_f32(s)).collect();
        self.0.push(&samples)
    }
}
