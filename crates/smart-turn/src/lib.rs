//! Smart Turn v3 in Rust: the probability that a speaker has finished their turn, from the last
//! 8 s of their audio.
//!
//! **What.** pipecat-ai's Smart Turn v3.2 (BSD-2-Clause), shipped in the PyPI wheel
//! `pipecat-ai==1.14.0` as `smart-turn-v3.2-cpu.onnx` (manifest id `smart-turn-v3`): Whisper-style
//! log-mel features of the last 8 s ([`features`]), a Whisper-tiny-sized encoder (two
//! convolutions, 400 positions, 4 pre-norm layers of width 384 and 6 heads), attention pooling
//! over the frames and a small classifier ending in a sigmoid. Read from the ONNX file by
//! voice-onnx and walked into parameters by [`graph`]; run on candle ([`model`]), so on the CPU or
//! a GPU. The export is statically quantized (int8 weights, uint8 activations in QDQ form); the
//! activation roundings are kept where the graph puts them, because the classifier was calibrated
//! with them (see [`graph`]).
//!
//! **Why.** The agent ends a turn after a short silence only when this model says the thought is
//! complete, and waits longer when it is not ("I'd like to book a table for... four").
//!
//! **Reference.** `pipecat/audio/turn/smart_turn/local_smart_turn_v3.py` and
//! `_whisper_features.py` in the same wheel; tests/golden.rs compares features and probabilities
//! with that code and onnxruntime on the same file.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let model = voice_smart_turn::SmartTurn::load_dir(std::path::Path::new("models/smart-turn-v3"), &candle_core::Device::Cpu)?;
//! let audio = vec![0f32; 32_000]; // 16 kHz mono, the utterance up to now
//! let p = model.probability(&audio)?;
//! println!("finished: {}", p > voice_smart_turn::THRESHOLD);
//! # Ok(()) }
//! ```

pub mod features;
mod graph;
mod model;

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};

pub use features::{FeatureExtractor, N_FRAMES, N_MELS, SAMPLE_RATE, WINDOW_SAMPLES};

/// The model file in the `smart-turn-v3` model directory.
pub const MODEL_FILE: &str = "smart-turn-v3.2-cpu.onnx";
/// The reference's decision rule: finished when the probability is above this.
pub const THRESHOLD: f32 = 0.5;

/// The loaded model: immutable and shared (cheap to clone), usable from several threads.
#[derive(Clone)]
pub struct SmartTurn {
    model: Arc<model::Model>,
    features: FeatureExtractor,
    device: Device,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").field("device", &self.device).finish()
    }
}

impl SmartTurn {
    /// [`MODEL_FILE`] in `dir`.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::load(&dir.join(MODEL_FILE), device)
    }

    /// Load a Smart Turn v3 ONNX export. Errors (never panics) on a missing, truncated or corrupt
    /// file, or a graph that is not this architecture (naming the step the walk failed at).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(bytes, device).with_context(|| format!("loading Smart Turn from {}", path.display()))
    }

    /// [`SmartTurn::load`] from the file's bytes.
    pub fn from_bytes(bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let onnx = voice_onnx::Model::parse(bytes)?;
        let weights = graph::read(&onnx.graph()?).context("not a Smart Turn v3 graph")?;
        ensure!(
            weights.d_model() > 0 && weights.positions.shape[0] * 2 == N_FRAMES,
            "the model covers {} frames, the features {N_FRAMES}",
            weights.positions.shape[0] * 2
        );
        let model = model::Model::new(&weights, device)?;
        Ok(Self { model: Arc::new(model), features: FeatureExtractor::default(), device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The probability that the turn is complete, given the utterance so far (16 kHz mono
    /// samples in [-1, 1]; only the last 8 s are used). Errors on non-finite samples.
    pub fn probability(&self, audio: &[f32]) -> Result<f32> {
        let f = self.features.features(audio)?;
        self.probability_from_features(&f)
    }

    /// The probability for precomputed features (`N_MELS x N_FRAMES`, row-major).
    pub fn probability_from_features(&self, features: &[f32]) -> Result<f32> {
        ensure!(features.len() == N_MELS * N_FRAMES, "{} feature values, expected {N_MELS} x {N_FRAMES}", features.len());
        let x = Tensor::from_slice(features, (1, N_MELS, N_FRAMES), &self.device)?;
        let p = self.model.forward(&x)?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        Ok(p[0])
    }

    /// The model's input for `audio` (see [`features`]).
    pub fn features(&self, audio: &[f32]) -> Result<Vec<f32>> {
        self.features.features(audio)
    }
}
