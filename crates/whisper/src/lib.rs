//! Whisper speech-to-text on candle, with no HTTP in it: load a model directory (CTranslate2
//! `model.bin` or Hugging Face safetensors) on a device and transcribe 16 kHz mono audio.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let model = voice_whisper::WhisperModel::load("whisper-tiny.en", std::path::Path::new("/models/whisper-tiny.en"), &candle_core::Device::Cpu)?;
//! let t = model.transcribe(&vec![0.0; 16_000], &Default::default(), &|| false)?;
//! println!("{}", t.text);
//! # Ok(()) }
//! ```

pub mod ct2;
pub mod decode;
pub mod eval;
pub mod loader;
pub mod mel;
pub mod model;
pub mod tokenizer;
pub mod transcribe;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

pub use decode::{Cancelled, WindowResult};
pub use mel::SAMPLE_RATE;
pub use transcribe::{EncoderWindow, FitGuards, Segment, Task, TranscribeOptions, Transcript, UnknownLanguage, FIT_GUARDS};

/// A loaded Whisper model with its tokenizer, front end and decoding masks, on one device.
#[derive(Debug, Clone)]
pub struct WhisperModel {
    pub name: String,
    pub model: model::Whisper,
    pub tokenizer: tokenizer::WhisperTokenizer,
    pub mel: mel::MelFrontEnd,
    pub masks: decode::Masks,
    pub device: Device,
}

impl WhisperModel {
    /// Load from a directory. On CUDA the weights are float16, on the CPU float32.
    pub fn load(name: &str, dir: &Path, device: &Device) -> Result<Self> {
        let dtype = if device.is_cuda() { DType::F16 } else { DType::F32 };
        let loaded = loader::load(dir, dtype, device).with_context(|| format!("loading model `{name}` from {}", dir.display()))?;
        let tokenizer = tokenizer::WhisperTokenizer::from_file(&dir.join("tokenizer.json"), loaded.config.vocab_size)
            .with_context(|| format!("model `{name}`"))?;
        let model = model::Whisper::load(&loaded.config, loaded.vb).with_context(|| format!("building model `{name}`"))?;
        let cfg = &model.config;
        let mut begin_suppress = cfg.begin_suppress_tokens.clone();
        if begin_suppress.is_empty() {
            begin_suppress = tokenizer.encode(" ")?;
        }
        let masks = decode::Masks::new(&tokenizer, cfg.vocab_size, &cfg.suppress_tokens, &begin_suppress, device)?;
        Ok(Self { name: name.to_string(), mel: mel::MelFrontEnd::new(cfg.num_mel_bins), tokenizer, masks, model, device: device.clone() })
    }

    /// Expected device memory for a model directory on a GPU (float16 weights plus working
    /// memory for one 30 s window), for the GPU budget check before loading.
    pub fn estimate_gpu_bytes(dir: &Path) -> Result<u64> {
        let weights = loader::weight_bytes(dir)?;
        // fp16 on disk for the registry models; safetensors may be fp32: count 2 bytes/param
        // by assuming at most the on-disk size, plus 300 MB for activations and masks.
        Ok(weights + 300_000_000)
    }

    pub fn is_multilingual(&self) -> bool {
        self.tokenizer.is_multilingual()
    }
}
