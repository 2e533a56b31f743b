//! Sentence embeddings with candle: the model (BERT family) and the batcher in front of it.
//!
//! No HTTP here: `voice-embed` wires this into routes. The split follows text-embeddings-inference:
//! [`model`] is the backend (one encoder, pooling, normalisation), [`batcher`] is the core (a queue
//! that groups concurrent requests into batches by token budget).

pub mod batcher;
mod cpu_bert;
pub mod model;

pub use batcher::{BatchObserver, Batcher, BatcherConfig, EmbedError};
pub use model::{Embedder, Encoded, Pooling};
