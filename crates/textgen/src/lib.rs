//! Text generation for the stack's LLM service, with no HTTP in it.
//!
//! - [`model`]: GGUF files dispatched on `general.architecture` (llama, qwen2, qwen3, gemma3) onto
//!   candle-transformers' quantized implementations; Hugging Face safetensors Llama/Qwen2 for
//!   bf16/f16 on a GPU.
//! - [`tokenizer`]: `tokenizer.json` when the model has one, otherwise built from the GGUF metadata
//!   (byte-level BPE for `gpt2`-type vocabularies, SentencePiece-style for `llama`-type ones).
//! - [`template`]: the model's own Jinja chat template (minijinja), ChatML when it has none.
//! - [`sampling`]: temperature, top-k, top-p, seed, frequency/presence and repeat penalties.
//! - [`text`]: UTF-8-safe incremental detokenisation and stop strings across token boundaries.
//! - [`engine`]: a scheduler thread that serves many sequences at once, one token each in turn.
//! - [`prefix_cache`]: finished sequences' K/V kept by token prefix, so a conversation's next
//!   turn prefills only what is new.

pub mod cpu_llama;
pub mod engine;
pub mod gguf_check;
pub mod model;
pub mod prefix_cache;
pub mod sampling;
pub mod spm;
pub mod template;
pub mod text;
pub mod tokenizer;

pub use engine::{Engine, EngineConfig, Event, FinishReason, GenerateRequest, SubmitError, Usage};
pub use model::{LoadedModel, ModelInfo};
pub use sampling::SamplingParams;
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::TextTokenizer;
