//! Retrieval-augmented generation for the voice agent, without HTTP.
//!
//! - [`chunk`]: structure- and token-aware chunking of Markdown and plain text.
//! - [`lexical`]: terms and BM25, shared by both stores.
//! - [`filter`]: the metadata filter language.
//! - [`store`]: the storage trait, the embedded (redb) and PostgreSQL + pgvector backends.
//! - [`search`]: hybrid fusion and context assembly.
//! - [`ingest`]: content hashes and document checks.

pub mod chunk;
pub mod filter;
pub mod ingest;
pub mod lexical;
pub mod search;
pub mod store;

pub use chunk::{Chunk, ChunkConfig, Format, TokenCounter};
pub use filter::{Filter, FilterError};
pub use search::{Hit, SearchMode, SearchParams};
pub use store::{embedded::EmbeddedStore, postgres::PostgresStore, Store, StoreError};
