//! Kokoro-82M text-to-speech on candle, with no HTTP in it: phoneme token ids and a voice style
//! in, 24 kHz audio out. Weights from the int8 ONNX export ([`onnx`]) or the upstream PyTorch
//! checkpoint ([`weights`]); voice packs and blends in [`voices`].
pub mod eval;
pub mod fused;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod voices;
pub mod weights;

pub use model::{Chunking, Kokoro, Precision, Prepared, Synthesis, CONTEXT_LENGTH, CROSSFADE, LEAD_RENDERED, SAMPLES_PER_FRAME, SAMPLE_RATE};
pub use weights::Weights;
