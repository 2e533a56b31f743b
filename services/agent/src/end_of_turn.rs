//! Semantic end of turn: after a short silence, a model listens to the end of the utterance and
//! says whether the speaker has finished ("What time is it?") or only paused ("I'd like to book a
//! table for..."). The loop asks it at the first pause of `--final-candidate-silence` (96 ms),
//! ends the turn on "finished" at `--end-of-turn-silence` (200 ms by default with the model) and
//! waits up to `--max-end-of-turn` of silence on "not finished" (see [`crate::turn`]). Without a
//! model the fixed silence decides alone (`--turn-detector none`).

use std::path::Path;

use anyhow::Result;

/// A loaded end-of-turn model, shared by every conversation.
pub trait EndOfTurnModel: Send + Sync + 'static {
    /// The probability that the speaker finished, from their utterance so far (16 kHz mono,
    /// the trailing silence included; the model reads its last 8 s).
    fn probability(&self, audio: &[i16]) -> Result<f32>;
}

/// Smart Turn v3 (voice-smart-turn) on the CPU: one decision costs one pass over the last 8 s.
pub struct SmartTurnModel(voice_smart_turn::SmartTurn);

impl SmartTurnModel {
    /// The model file in `dir` (the `smart-turn-v3` model directory).
    pub fn load(dir: &Path) -> Result<Self> {
        let model = voice_smart_turn::SmartTurn::load_dir(dir, &candle_core::Device::Cpu)?;
        // One decision on silence at load: thread pools and first allocations happen now, not
        // during the first user's first pause.
        model.probability(&[0.0; 1600])?;
        Ok(Self(model))
    }
}

impl EndOfTurnModel for SmartTurnModel {
    fn probability(&self, audio: &[i16]) -> Result<f32> {
        let samples: Vec<f32> = audio.iter().map(|&s| voice_runtime::audio::s16_to_f32(s)).collect();
        self.0.probability(&samples)
    }
}
