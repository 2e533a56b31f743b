//! Turning a submitted document into what the store keeps: chunks and a content hash.
//!
//! The hash covers everything that decides the stored chunks (text, format, metadata, chunking
//! settings and the embedding model), so re-ingesting an unchanged document is a no-op and any
//! change replaces the document's chunks.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chunk::{chunk_document, Chunk, ChunkConfig, Format, TokenCounter};

#[derive(Debug, Clone)]
pub struct DocumentInput {
    pub id: String,
    pub text: String,
    pub format: Format,
    pub metadata: Map<String, Value>,
}

pub fn content_hash(doc: &DocumentInput, cfg: ChunkConfig, model: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        doc.text.as_bytes(),
        format!("{:?}", doc.format).as_bytes(),
        serde_json::to_string(&doc.metadata).unwrap_or_default().as_bytes(),
        format!("{}:{}", cfg.max_tokens, cfg.overlap_tokens).as_bytes(),
        model.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

pub fn chunks(doc: &DocumentInput, cfg: ChunkConfig, counter: &dyn TokenCounter) -> Vec<Chunk> {
    chunk_document(&doc.text, doc.format, cfg, counter)
}

/// Document ids: printable, bounded, no control characters.
pub fn validate_document_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 256 {
        return Err("document ids must be 1 to 256 bytes".into());
    }
    if id.chars().any(char::is_control) {
        return Err("document ids must not contain control characters".into());
    }
    Ok(())
}
