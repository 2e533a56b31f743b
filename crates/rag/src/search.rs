//! Hybrid ranking on top of any [`Store`]: vector and BM25 candidates fused by a convex
//! combination, then thresholds, top-k, and context assembly within a token budget.
//!
//! Fusion: `score = alpha * cosine + (1 - alpha) * bm25 / max_bm25`, where the BM25 maximum is
//! taken over this query's lexical candidates (so the lexical half lies in [0, 1] like cosine).
//! A chunk found by only one side gets 0 from the other. A convex combination keeps scores
//! meaningful for a `score_threshold`, unlike reciprocal-rank fusion, and did at least as well in
//! published comparisons (Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    chunk::TokenCounter,
    filter::Filter,
    lexical,
    store::{Candidate, Store, StoreResult},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Lexical,
}

#[derive(Debug, Clone)]
pub struct SearchParams {
    pub top_k: usize,
    pub score_threshold: Option<f64>,
    pub filter: Filter,
    pub mode: SearchMode,
    /// Weight of the vector side in hybrid mode.
    pub alpha: f64,
}

impl Default for SearchParams {
    fn default() -> Self {
        Self { top_k: 5, score_threshold: None, filter: Filter::All, mode: SearchMode::Hybrid, alpha: 0.7 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub doc_id: String,
    pub chunk_index: u32,
    pub text: String,
    pub section: String,
    pub metadata: Map<String, Value>,
    /// The ranking score (fused in hybrid mode, cosine in vector mode, normalised BM25 in lexical).
    pub score: f64,
    pub vector_score: Option<f64>,
    pub lexical_score: Option<f64>,
}

/// Candidates fetched from each side: enough that fusion can reorder beyond top-k.
pub fn candidate_pool(top_k: usize) -> usize {
    (top_k * 4).max(40)
}

pub async fn search(store: &dyn Store, collection: &str, query_text: &str, query_vector: &[f32], p: &SearchParams) -> StoreResult<Vec<Hit>> {
    let pool = candidate_pool(p.top_k);
    let terms = lexical::query_terms(query_text);
    let vector = if p.mode != SearchMode::Lexical { store.vector_candidates(collection, query_vector, pool, &p.filter).await? } else { Vec::new() };
    let lexical = if p.mode != SearchMode::Vector { store.lexical_candidates(collection, &terms, pool, &p.filter).await? } else { Vec::new() };
    Ok(fuse(vector, lexical, p))
}

/// Fuse the two candidate lists (exposed for tests and for stores that rank elsewhere).
pub fn fuse(vector: Vec<Candidate>, lexical: Vec<Candidate>, p: &SearchParams) -> Vec<Hit> {
    let max_bm25 = lexical.iter().map(|c| c.score).fold(0.0, f64::max);
    let mut by_key: HashMap<(String, u32), Hit> = HashMap::new();
    for c in vector {
        let key = (c.doc_id.clone(), c.index);
        by_key.insert(key, hit(c, true));
    }
    for c in lexical {
        let key = (c.doc_id.clone(), c.index);
        let score = c.score;
        by_key.entry(key).and_modify(|h| h.lexical_score = Some(score)).or_insert_with(|| hit(c, false));
    }
    let alpha = p.alpha.clamp(0.0, 1.0);
    let mut hits: Vec<Hit> = by_key
        .into_values()
        .map(|mut h| {
            let v = h.vector_score.unwrap_or(0.0);
            let l = if max_bm25 > 0.0 { h.lexical_score.unwrap_or(0.0) / max_bm25 } else { 0.0 };
            h.score = match p.mode {
                SearchMode::Hybrid => alpha * v + (1.0 - alpha) * l,
                SearchMode::Vector => v,
                SearchMode::Lexical => l,
            };
            h
        })
        .filter(|h| p.score_threshold.is_none_or(|t| h.score >= t))
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.doc_id.cmp(&b.doc_id)).then_with(|| a.chunk_index.cmp(&b.chunk_index)));
    hits.truncate(p.top_k);
    hits
}

fn hit(c: Candidate, from_vector: bool) -> Hit {
    Hit {
        doc_id: c.doc_id,
        chunk_index: c.index,
        text: c.text,
        section: c.section,
        metadata: c.metadata,
        score: 0.0,
        vector_score: from_vector.then_some(c.score),
        lexical_score: (!from_vector).then_some(c.score),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    /// 1-based marker used in `context` ("[1]").
    pub marker: usize,
    pub doc_id: String,
    pub chunk_index: u32,
    pub section: String,
    /// `metadata.source` or `metadata.title` when present, else the document id.
    pub source: String,
    pub text: String,
    pub score: f64,
    pub tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// Ready to put in a prompt: numbered passages with their sources.
    pub context: String,
    pub passages: Vec<Passage>,
    pub tokens: usize,
}

/// Take hits best first while they fit `max_tokens` (a passage that does not fit is skipped and
/// smaller later ones may still be taken).
pub fn assemble_context(hits: Vec<Hit>, max_tokens: usize, counter: &dyn TokenCounter) -> Context {
    let mut passages = Vec::new();
    let mut used = 0;
    let mut context = String::new();
    for h in hits {
        let source = ["source", "title"]
            .iter()
            .find_map(|k| h.metadata.get(*k).and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| h.doc_id.clone());
        let marker = passages.len() + 1;
        let block = format!("[{marker}] (source: {source})\n{}\n\n", h.text);
        let tokens = counter.count(&block);
        if used + tokens > max_tokens {
            continue;
        }
        used += tokens;
        context.push_str(&block);
        passages.push(Passage {
            marker,
            doc_id: h.doc_id,
            chunk_index: h.chunk_index,
            section: h.section,
            source,
            text: h.text,
            score: h.score,
            tokens,
        });
    }
    Context { context: context.trim_end().to_string(), passages, tokens: used }
}
