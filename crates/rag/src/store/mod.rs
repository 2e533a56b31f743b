//! Where collections, documents and chunks live: one trait, two backends.
//!
//! - [`embedded::EmbeddedStore`]: the default. A redb file (copy-on-write B-trees, a durable
//!   commit per write: an acknowledged ingest survives `kill -9` and power loss) plus in-memory
//!   indexes rebuilt at start-up (exact cosine scan, BM25 postings).
//! - [`postgres::PostgresStore`]: PostgreSQL + pgvector, for several replicas sharing one corpus.
//!   Vector search uses an HNSW index; BM25 is computed in SQL from per-chunk term arrays with the
//!   same tokenizer and constants as the embedded store, so both rank alike.
//!
//! Stores rank candidates; the hybrid fusion on top ([`crate::search`]) is shared.

pub mod embedded;
pub mod postgres;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::filter::Filter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collection `{0}` does not exist")]
    CollectionNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dimensions: usize,
    pub model: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub documents: u64,
    pub chunks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub id: String,
    pub content_hash: String,
    pub metadata: Map<String, Value>,
    pub chunks: u32,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
}

/// One chunk as written: text, where it came from, its vector and its BM25 terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkWrite {
    pub index: u32,
    pub text: String,
    pub section: String,
    pub embedding: Vec<f32>,
}

/// A document replacing whatever was stored under its id, with all its chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    pub info: DocumentInfo,
    pub chunks: Vec<ChunkWrite>,
}

/// A ranked chunk as a store returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub doc_id: String,
    pub index: u32,
    pub text: String,
    pub section: String,
    /// The document's metadata (what filters see).
    pub metadata: Map<String, Value>,
    /// Cosine similarity (vector candidates) or BM25 (lexical candidates).
    pub score: f64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// `embedded` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Create a collection, or return it when it exists with the same dimensions.
    async fn create_collection(&self, name: &str, dimensions: usize, model: &str) -> StoreResult<CollectionInfo>;
    async fn collection(&self, name: &str) -> StoreResult<CollectionInfo>;
    async fn list_collections(&self) -> StoreResult<Vec<CollectionInfo>>;
    async fn delete_collection(&self, name: &str) -> StoreResult<()>;

    /// Replace these documents (all or none), durably, before returning.
    async fn upsert(&self, collection: &str, docs: Vec<DocumentWrite>) -> StoreResult<()>;
    async fn document(&self, collection: &str, id: &str) -> StoreResult<Option<DocumentInfo>>;
    /// Documents by id, from `offset`, at most `limit`.
    async fn list_documents(&self, collection: &str, offset: usize, limit: usize) -> StoreResult<Vec<DocumentInfo>>;
    /// Delete a document and its chunks; false when there was none.
    async fn delete_document(&self, collection: &str, id: &str) -> StoreResult<bool>;

    /// The `limit` chunks most similar to `query` (unit length) that pass `filter`.
    async fn vector_candidates(&self, collection: &str, query: &[f32], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>>;
    /// The `limit` best BM25 chunks for these distinct terms that pass `filter`.
    async fn lexical_candidates(&self, collection: &str, terms: &[String], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>>;
}

/// Collection names: what fits in a URL path and a SQL literal without escaping surprises.
pub fn validate_collection_name(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("collection name `{name}` must be 1 to 64 characters of A-Z, a-z, 0-9, `-`, `_`")))
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Order candidates best first, ties broken by (document, chunk) so every backend agrees.
pub fn sort_candidates(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.doc_id.cmp(&b.doc_id)).then_with(|| a.index.cmp(&b.index)));
}
