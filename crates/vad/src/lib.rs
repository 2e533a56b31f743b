//! Silero VAD v6, 16 kHz, in Rust: one speech probability per 512-sample (32 ms) window.
//!
//! **What.** The model of the `silero-vad` PyPI package (manifest id `silero-vad`, wheel 6.2.3):
//! an STFT front end (a fixed conv basis, n_fft 256, hop 128, magnitude of 129 bins), four
//! conv1d + ReLU layers (129 -> 128 -> 64 /2 -> 64 /2 -> 128 channels, 4 frames -> 1), an
//! `LSTMCell(128, 128)` whose state is carried from window to window, and a ReLU + 1x1 conv +
//! sigmoid decoder. Each call sees the 512 new samples with the last 64 samples of the previous
//! window prepended (zeros after a reset), exactly as upstream's `OnnxWrapper.__call__` and JIT
//! model do (`utils_vad.py`: `x = cat([context, x])`, `context = x[..., -64:]`), reflect-padded
//! by 64 on the right.
//!
//! **Why.** Voice turn-taking (end of utterance, barge-in) needs a VAD that runs on every 32 ms
//! of incoming audio next to the services, without Python or onnxruntime. One window costs
//! ~50-60 us on one CPU core (register-blocked f32 loops, AVX2/FMA when present, nothing
//! allocated per window; ~500x real time); the same graph as candle ops
//! ([`Compute::CandleOps`], ~1 ms per window on the CPU) runs on any candle device.
//!
//! **Weights.** [`SileroVad::load`] reads either file of the package:
//! - `silero_vad.onnx` ([`ONNX_FILE`]): the official export, the 16 kHz branch of its `If` on the
//!   sample rate (the same weights as `silero_vad.jit`, what `load_silero_vad()` returns). This
//!   is the reference: tests/golden.rs matches onnxruntime on it to ~1e-6.
//! - `silero_vad_16k.safetensors` ([`SAFETENSORS_FILE`], read through candle's safetensors
//!   loader): the file upstream's `tinygrad_model.py` loads. Note: in 6.2.1-6.2.3 it is *not*
//!   the checkpoint of the ONNX/JIT models (same architecture and STFT basis, other trained
//!   weights: correlated, but its probabilities differ from the official model's by up to 0.41
//!   on the jfk sample, at a speech/silence boundary; both classify its speech and pauses
//!   alike). It is checked against a numpy port of `tinygrad_model.py` instead.
//!
//! **Reference.** <https://github.com/snakers4/silero-vad>, package files `silero_vad/model.py`,
//! `utils_vad.py` (`OnnxWrapper`), `tinygrad_model.py`, `data/silero_vad.onnx`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use voice_vad::{SileroVad, VadStream};
//! let dir = std::path::Path::new("models/silero-vad");
//! let vad = SileroVad::load_dir(dir, &candle_core::Device::Cpu)?;
//! let mut stream = VadStream::new(vad);
//! let chunk = vec![0f32; 1000]; // any length, 16 kHz mono f32 in [-1, 1]
//! for p in stream.push(&chunk)? {
//!     println!("speech probability {p:.3}");
//! }
//! # Ok(()) }
//! ```

mod host;
mod onnx;
mod ops;
mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use host::{HostModel, Scratch, HIDDEN, PADDED};

// The model is shared across threads; states and streams move between them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<SileroVad>();
    send_sync::<VadState>();
    send_sync::<VadStream>();
};

/// The only sample rate of this model.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per window (32 ms).
pub const WINDOW_SAMPLES: usize = 512;
/// Samples of the previous window prepended to each window.
pub const CONTEXT_SAMPLES: usize = 64;
/// The official export in the `silero-vad` model directory (the default of [`SileroVad::load_dir`]).
pub const ONNX_FILE: &str = "silero_vad.onnx";
/// The safetensors file in the `silero-vad` model directory (another checkpoint; see the crate docs).
pub const SAFETENSORS_FILE: &str = "silero_vad_16k.safetensors";

/// How a window is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// Plain f32 loops on the host (the default on [`Device::Cpu`]).
    HostLoops,
    /// Candle tensor ops on the model's device (the default on any other device).
    CandleOps,
}

struct Inner {
    host: HostModel,
    candle: Option<ops::CandleModel>,
    compute: Compute,
    device: Device,
}

/// The loaded model: immutable, cheap to clone (shared), usable from many threads; each audio
/// stream keeps its own [`VadState`].
#[derive(Clone)]
pub struct SileroVad {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").field("compute", &self.inner.compute).field("device", &self.inner.device).finish()
    }
}

impl SileroVad {
    /// Load `silero_vad.onnx` (or another Silero v5/v6 ONNX export with the 16 kHz branch) or
    /// `silero_vad_16k.safetensors`, by extension (else by content). Host loops on the CPU,
    /// candle ops elsewhere. Errors (never panics) on a missing, truncated or corrupt file, a
    /// missing tensor, a wrong shape or dtype, or non-finite weights.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let compute = if device.is_cpu() { Compute::HostLoops } else { Compute::CandleOps };
        Self::load_with(path, device, compute)
    }

    /// [`SileroVad::load`] with an explicit [`Compute`].
    pub fn load_with(path: &Path, device: &Device, compute: Compute) -> Result<Self> {
        let tensors = weights::read(path)?;
        Self::from_tensors(&tensors, device, compute).with_context(|| format!("loading Silero VAD from {}", path.display()))
    }

    /// The official weights of a `silero-vad` model directory ([`ONNX_FILE`]).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::load(&dir.join(ONNX_FILE), device)
    }

    /// From tensors under the safetensors names (`conv1.weight`, `lstm_cell.weight_ih`, ...; see
    /// `silero_vad_16k.safetensors`), on any device, any float dtype.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, device: &Device, compute: Compute) -> Result<Self> {
        let params = weights::check(tensors)?;
        let candle = match compute {
            Compute::CandleOps => Some(ops::CandleModel::new(&params, device).context("placing the Silero VAD weights on the device")?),
            Compute::HostLoops => None,
        };
        Ok(Self { inner: Arc::new(Inner { host: HostModel::new(&params), candle, compute, device: device.clone() }) })
    }

    pub fn compute(&self) -> Compute {
        self.inner.compute
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The speech probability of one window of exactly [`WINDOW_SAMPLES`] 16 kHz samples, given
    /// (and updating) the stream's state. An error (wrong length, a NaN or infinite sample)
    /// leaves the state unchanged.
    pub fn process(&self, state: &mut VadState, window: &[f32]) -> Result<f32> {
        if window.len() != WINDOW_SAMPLES {
            bail!("Silero VAD takes windows of exactly {WINDOW_SAMPLES} samples at 16 kHz, got {}", window.len());
        }
        if let Some(i) = window.iter().position(|v| !v.is_finite()) {
            bail!("Silero VAD window sample {i} is not finite ({})", window[i]);
        }
        let s = &mut *state.scratch;
        // [context | window | reflection of the last 64 samples, excluding the edge sample]
        let n = CONTEXT_SAMPLES + WINDOW_SAMPLES;
        s.x[..CONTEXT_SAMPLES].copy_from_slice(&state.context);
        s.x[CONTEXT_SAMPLES..n].copy_from_slice(window);
        for i in 0..PADDED - n {
            s.x[n + i] = s.x[n - 2 - i];
        }
        let p = match &self.inner.candle {
            Some(m) => {
                let (mut h, mut c) = (state.h, state.c);
                let p = m.forward(&s.x, &mut h, &mut c)?;
                (state.h, state.c) = (h, c);
                p
            }
            None => self.inner.host.forward(s, &mut state.h, &mut state.c),
        };
        state.context.copy_from_slice(&window[WINDOW_SAMPLES - CONTEXT_SAMPLES..]);
        Ok(p)
    }

    /// A whole recording the way upstream's `audio_forward` does it: a fresh state, the tail
    /// zero-padded to a full window, one probability per window.
    pub fn process_all(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let mut state = VadState::new();
        let mut out = Vec::with_capacity(samples.len().div_ceil(WINDOW_SAMPLES));
        let mut chunks = samples.chunks_exact(WINDOW_SAMPLES);
        for w in &mut chunks {
            out.push(self.process(&mut state, w)?);
        }
        if !chunks.remainder().is_empty() {
            let mut last = [0f32; WINDOW_SAMPLES];
            last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            out.push(self.process(&mut state, &last)?);
        }
        Ok(out)
    }
}

/// The state of one audio stream: the LSTM's hidden and cell vectors, the last 64 samples, and
/// the scratch buffers of the forward pass (so processing allocates nothing).
#[derive(Clone)]
pub struct VadState {
    h: [f32; HIDDEN],
    c: [f32; HIDDEN],
    context: [f32; CONTEXT_SAMPLES],
    scratch: Box<Scratch>,
}

impl VadState {
    pub fn new() -> Self {
        Self { h: [0.0; HIDDEN], c: [0.0; HIDDEN], context: [0.0; CONTEXT_SAMPLES], scratch: Box::new(Scratch::new()) }
    }

    /// Back to the start of a stream (upstream's `reset_states`): zero state and context.
    pub fn reset(&mut self) {
        self.h = [0.0; HIDDEN];
        self.c = [0.0; HIDDEN];
        self.context = [0.0; CONTEXT_SAMPLES];
    }

    /// The LSTM hidden state (upstream's `state[0]`).
    pub fn hidden(&self) -> &[f32] {
        &self.h
    }

    /// The LSTM cell state (upstream's `state[1]`).
    pub fn cell(&self) -> &[f32] {
        &self.c
    }

    /// The last 64 samples seen (prepended to the next window).
    pub fn context(&self) -> &[f32] {
        &self.context
    }
}

impl Default for VadState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for VadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadState").field("h[..4]", &&self.h[..4]).field("c[..4]", &&self.c[..4]).finish_non_exhaustive()
    }
}

/// Streaming over arbitrary-length chunks of 16 kHz mono f32 audio: buffers up to one window and
/// returns the probability of every window completed by each chunk, in order. Window `k` covers
/// samples `512 k .. 512 (k + 1)` of the stream.
#[derive(Debug, Clone)]
pub struct VadStream {
    model: SileroVad,
    state: VadState,
    buf: Vec<f32>,
    windows: u64,
}

impl VadStream {
    pub fn new(model: SileroVad) -> Self {
        Self { model, state: VadState::new(), buf: Vec::with_capacity(WINDOW_SAMPLES), windows: 0 }
    }

    /// Feed a chunk; the probabilities of the windows it completes.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity((self.buf.len() + samples.len()) / WINDOW_SAMPLES);
        self.push_into(samples, &mut out)?;
        Ok(out)
    }

    /// [`VadStream::push`] appending to `out`; returns how many windows completed. A chunk with
    /// a NaN or infinite sample is refused as a whole (nothing consumed, the stream unchanged).
    pub fn push_into(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<usize> {
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            bail!("audio sample {i} of the chunk is not finite ({})", samples[i]);
        }
        let before = out.len();
        let mut rest = samples;
        if !self.buf.is_empty() {
            let take = (WINDOW_SAMPLES - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() < WINDOW_SAMPLES {
                return Ok(0);
            }
            out.push(self.model.process(&mut self.state, &self.buf)?);
            self.buf.clear();
            self.windows += 1;
        }
        let mut windows = rest.chunks_exact(WINDOW_SAMPLES);
        for w in &mut windows {
            out.push(self.model.process(&mut self.state, w)?);
            self.windows += 1;
        }
        self.buf.extend_from_slice(windows.remainder());
        Ok(out.len() - before)
    }

    /// End of stream: the buffered partial window, zero-padded (as upstream's `audio_forward`
    /// pads the tail), if any samples are buffered.
    pub fn finish(&mut self) -> Result<Option<f32>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.buf.resize(WINDOW_SAMPLES, 0.0);
        let p = self.model.process(&mut self.state, &self.buf)?;
        self.buf.clear();
        self.windows += 1;
        Ok(Some(p))
    }

    /// Start a new stream (state, context and buffer cleared).
    pub fn reset(&mut self) {
        self.state.reset();
        self.buf.clear();
        self.windows = 0;
    }

    /// Samples buffered towards the next window (< 512).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Windows processed since the start (or the last reset).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    pub fn state(&self) -> &VadState {
        &self.state
    }

    pub fn model(&self) -> &SileroVad {
        &self.model
    }
}
