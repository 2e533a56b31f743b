//! The model's input: Whisper-style log-mel features of the last 8 s, as the reference computes
//! them (`pipecat/audio/turn/smart_turn/_whisper_features.py`, which vendors transformers'
//! `WhisperFeatureExtractor(chunk_length=8)`): the audio is cut to its last 8 s or zero-padded in
//! front to 8 s, normalised to zero mean and unit variance over the whole window (padding
//! included), then Whisper's log-mel (voice-whisper's front end: periodic Hann of 400, hop 160,
//! reflect-padded centred frames, the last dropped, Slaney mel, log10, 8-decade floor, (x+4)/4).

use anyhow::{bail, Result};
use voice_whisper::mel::MelFrontEnd;

/// The only sample rate of the model.
pub const SAMPLE_RATE: u32 = 16_000;
/// Seconds of audio the model sees (the end of the utterance).
pub const WINDOW_SECONDS: usize = 8;
/// Samples of audio the model sees.
pub const WINDOW_SAMPLES: usize = WINDOW_SECONDS * SAMPLE_RATE as usize;
/// Mel bins per frame.
pub const N_MELS: usize = 80;
/// Frames per window (10 ms each).
pub const N_FRAMES: usize = WINDOW_SAMPLES / voice_whisper::mel::HOP_LENGTH;
/// `do_normalize`'s epsilon in the reference.
const NORM_EPS: f64 = 1e-7;

/// Computes the 80 x 800 log-mel input; holds the FFT plan, so one per model is enough.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    mel: MelFrontEnd,
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        Self { mel: MelFrontEnd::new(N_MELS) }
    }
}

impl FeatureExtractor {
    /// The last 8 s of `audio` (16 kHz mono, [-1, 1]) as row-major `N_MELS x N_FRAMES` features.
    /// Errors on non-finite samples (they would turn every feature into NaN).
    pub fn features(&self, audio: &[f32]) -> Result<Vec<f32>> {
        if let Some(i) = audio.iter().position(|s| !s.is_finite()) {
            bail!("audio sample {i} is not a finite number");
        }
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let mut x = vec![0f32; WINDOW_SAMPLES];
        x[WINDOW_SAMPLES - tail.len()..].copy_from_slice(tail);
        // Mean and variance in f64 (the reference takes them in float32); applied in f32 as there.
        let n = WINDOW_SAMPLES as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let (mean, inv_std) = (mean as f32, (1.0 / (var + NORM_EPS).sqrt()) as f32);
        for v in x.iter_mut() {
            *v = (*v - mean) * inv_std;
        }
        let (mel, frames) = self.mel.log_mel(&x, 0);
        debug_assert_eq!(frames, N_FRAMES);
        Ok(mel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_padding_and_bad_samples() {
        let fe = FeatureExtractor::default();
        let tone: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.3).sin() * 0.5).collect();
        let f = fe.features(&tone).unwrap();
        assert_eq!(f.len(), N_MELS * N_FRAMES);
        assert!(f.iter().all(|v| v.is_finite()));
        // Only the last 8 s count: 10 s whose last 8 are the same give the same features.
        let mut long = vec![0.25f32; 2 * 16_000];
        let mut eight: Vec<f32> = (0..WINDOW_SAMPLES).map(|i| (i as f32 * 0.01).sin()).collect();
        long.append(&mut eight.clone());
        assert_eq!(fe.features(&long).unwrap(), fe.features(&eight).unwrap());
        eight[5] = f32::NAN;
        assert!(fe.features(&eight).is_err());
        // Silence is a valid input (all equal after normalisation).
        assert!(fe.features(&[]).unwrap().iter().all(|v| v.is_finite()));
    }
}
