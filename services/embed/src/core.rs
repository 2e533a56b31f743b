//! What both front doors (HTTP and gRPC) call: embed, ingest, search, context, with the
//! validation, the error mapping and the metrics in one place.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use serde::Serialize;
use serde_json::{Map, Value};
use voice_embeddings::{BatchObserver, Batcher, EmbedError, Embedder, Encoded};
use voice_rag::{
    chunk::TokenCounter,
    ingest::{self, DocumentInput},
    search::{self, Context, Hit, SearchParams},
    store::{ChunkWrite, DocumentInfo, DocumentWrite, Store, StoreError},
    ChunkConfig, Filter, Format,
};
use voice_runtime::{metrics::LATENCY_BUCKETS, ApiError, ModelSlot, ServiceContext};

pub struct EmbedMetrics {
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub batch_seconds: Histogram,
    pub tokens: IntCounter,
    pub inputs: IntCounter,
    pub truncated: IntCounter,
    pub search_seconds: HistogramVec,
    pub ingested: IntCounterVec,
    pub index_documents: IntGaugeVec,
    pub index_chunks: IntGaugeVec,
}

impl EmbedMetrics {
    pub fn new(ctx: &ServiceContext) -> prometheus::Result<Self> {
        let m = &ctx.metrics;
        let ns = m.namespace().to_string();
        let gauge_vec = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(prometheus::Opts::new(format!("{ns}_{name}"), help), &["collection"])?;
            m.registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Self {
            batch_size: m.new_histogram("batch_size", "Inputs per model call", &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])?,
            batch_tokens: m.new_histogram("batch_padded_tokens", "Padded tokens per model call", &[64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0])?,
            batch_seconds: m.new_histogram("batch_seconds", "Time of one model call", LATENCY_BUCKETS)?,
            tokens: m.new_counter("tokens_total", "Tokens embedded (tokens/s = rate of this)")?,
            inputs: m.new_counter("inputs_total", "Texts embedded")?,
            truncated: m.new_counter("truncated_inputs_total", "Inputs cut to the model's limit")?,
            search_seconds: m.new_histogram_vec(
                "search_seconds",
                "Search latency (embedding the query included)",
                &["backend", "mode"],
                LATENCY_BUCKETS,
            )?,
            ingested: m.new_counter_vec("ingested_documents_total", "Documents ingested by outcome", &["status"])?,
            index_documents: gauge_vec("index_documents", "Documents per collection")?,
            index_chunks: gauge_vec("index_chunks", "Chunks per collection")?,
        })
    }
}

impl BatchObserver for EmbedMetrics {
    fn batch(&self, items: usize, tokens: usize, padded: usize, seconds: f64) {
        self.batch_size.observe(items as f64);
        self.batch_tokens.observe(padded as f64);
        self.batch_seconds.observe(seconds);
        self.tokens.inc_by(tokens as u64);
        self.inputs.inc_by(items as u64);
    }
}

pub struct Core {
    pub model_id: String,
    pub slot: Arc<ModelSlot<Embedder>>,
    pub batcher: Batcher,
    /// Set once the store is open; until then (another process still holds the embedded file
    /// during a rolling update, or PostgreSQL is unreachable) retrieval answers 503 and
    /// embeddings keep working.
    pub store: OnceLock<Arc<dyn Store>>,
    pub metrics: Arc<EmbedMetrics>,
    pub chunking: ChunkConfig,
}

struct Counter<'a>(&'a Embedder);
impl TokenCounter for Counter<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::CollectionNotFound(c) => {
            ApiError::not_found(format!("collection `{c}` does not exist")).with_param("collection").with_code("collection_not_found")
        }
        StoreError::Conflict(m) => ApiError::new(http::StatusCode::CONFLICT, "invalid_request_error", m).with_code("conflict"),
        StoreError::Invalid(m) => ApiError::bad_request(m),
        StoreError::Backend(m) => {
            tracing::error!(error = %m, "storage backend failed");
            ApiError::unavailable(format!("the document store is unavailable: {m}"), Duration::from_secs(2))
        }
    }
}

fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::Overloaded => ApiError::overloaded(Duration::from_secs(1)),
        EmbedError::Closed => ApiError::unavailable("the embedding worker has stopped", Duration::from_secs(5)),
        EmbedError::Model(m) => ApiError::internal(format!("embedding failed: {m}")),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestOutcome {
    pub id: String,
    pub status: &'static str,
    pub chunks: u32,
}

/// One document as a request gives it, before checks.
pub struct RawDocument {
    pub id: String,
    pub text: String,
    pub format: Option<String>,
    pub metadata: Option<Value>,
}

pub struct SearchRequest {
    pub query: String,
    pub top_k: Option<i64>,
    pub score_threshold: Option<f64>,
    pub filter: Option<Value>,
    pub mode: Option<String>,
    pub alpha: Option<f64>,
}

impl Core {
    pub fn store(&self) -> Result<&Arc<dyn Store>, ApiError> {
        self.store.get().ok_or_else(|| {
            ApiError::unavailable(
                "the document store is not open yet (see /readyz components.store); embeddings work meanwhile",
                Duration::from_secs(2),
            )
            .with_code("store_unavailable")
        })
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        self.slot.primary()
    }

    pub fn dimensions(&self) -> usize {
        self.embedder().dimensions
    }

    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        voice_runtime::error::check_model(&self.model_id, requested)
    }

    /// Tokenise on a blocking thread; `truncate: false` refuses over-long inputs instead.
    pub async fn encode(&self, texts: Vec<String>, truncate: bool) -> Result<Vec<Encoded>, ApiError> {
        let e = self.embedder().clone();
        let enc = tokio::task::spawn_blocking(move || e.encode(&texts.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .map_err(|e| ApiError::internal(format!("tokeniser task failed: {e}")))?
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
        if let Some((i, e)) = enc.iter().enumerate().find(|(_, e)| e.truncated()) {
            if !truncate {
                return Err(ApiError::bad_request(format!(
                    "input {i} has {} tokens; the model reads at most {} (send truncate: true to cut it)",
                    e.original_len,
                    self.embedder().max_seq_len
                ))
                .with_param("input")
                .with_code("context_length_exceeded"));
            }
        }
        self.metrics.truncated.inc_by(enc.iter().filter(|e| e.truncated()).count() as u64);
        Ok(enc)
    }

    pub async fn embed_encoded(&self, enc: Vec<Encoded>) -> Result<Vec<Vec<f32>>, ApiError> {
        self.batcher.embed(enc).await.map_err(embed_error)
    }

    pub async fn refresh_index_gauges(&self) {
        let Some(store) = self.store.get() else { return };
        if let Ok(cols) = store.list_collections().await {
            for c in cols {
                self.metrics.index_documents.with_label_values(&[&c.name]).set(c.documents as i64);
                self.metrics.index_chunks.with_label_values(&[&c.name]).set(c.chunks as i64);
            }
        }
    }

    fn chunk_config(&self, tokens: Option<i64>, overlap: Option<i64>) -> Result<ChunkConfig, ApiError> {
        let max = self.embedder().max_seq_len.saturating_sub(2);
        let t = match tokens {
            None | Some(0) => self.chunking.max_tokens,
            Some(t) if (16..=max as i64).contains(&t) => t as usize,
            Some(t) => return Err(ApiError::bad_request(format!("chunk_tokens must be 16 to {max}, got {t}")).with_param("chunk_tokens")),
        };
        let o = match overlap {
            None => self.chunking.overlap_tokens.min(t / 2),
            Some(o) if o >= 0 && (o as usize) <= t / 2 => o as usize,
            Some(o) => {
                return Err(ApiError::bad_request(format!("chunk_overlap must be 0 to {} (half a chunk), got {o}", t / 2)).with_param("chunk_overlap"))
            }
        };
        Ok(ChunkConfig { max_tokens: t, overlap_tokens: o })
    }

    /// Validate, chunk, embed and store documents; all or nothing, durable when it returns.
    pub async fn ingest(
        &self,
        collection: &str,
        docs: Vec<RawDocument>,
        chunk_tokens: Option<i64>,
        chunk_overlap: Option<i64>,
        max_documents: usize,
    ) -> Result<Vec<IngestOutcome>, ApiError> {
        let cfg = self.chunk_config(chunk_tokens, chunk_overlap)?;
        if docs.is_empty() {
            return Err(ApiError::bad_request("`documents` must hold at least one document").with_param("documents"));
        }
        if docs.len() > max_documents {
            return Err(ApiError::bad_request(format!("{} documents in one request; the limit is {max_documents} (--max-documents)", docs.len()))
                .with_param("documents"));
        }
        let mut seen = HashSet::new();
        let mut inputs = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            ingest::validate_document_id(&d.id).map_err(|m| ApiError::bad_request(format!("documents[{i}].id: {m}")).with_param("id"))?;
            if !seen.insert(d.id.clone()) {
                return Err(ApiError::bad_request(format!("document id `{}` appears more than once in this request", d.id))
                    .with_param("id")
                    .with_code("duplicate_id"));
            }
            let format = match d.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("markdown") | Some("md") => Format::Markdown,
                Some("text") | Some("plain") | Some("txt") => Format::Text,
                Some("pdf") => {
                    return Err(
                        ApiError::unsupported_media("PDF is not supported yet: extract the text and send format \"text\"").with_param("format")
                    )
                }
                Some(other) => {
                    return Err(ApiError::bad_request(format!("documents[{i}].format `{other}`: use markdown or text")).with_param("format"))
                }
            };
            if d.text.trim().is_empty() {
                return Err(ApiError::bad_request(format!("document `{}` has no text", d.id)).with_param("text"));
            }
            let metadata = match d.metadata {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => return Err(ApiError::bad_request(format!("documents[{i}].metadata must be a JSON object")).with_param("metadata")),
            };
            inputs.push(DocumentInput { id: d.id, text: d.text, format, metadata });
        }

        self.store()?.create_collection(collection, self.dimensions(), &self.model_id).await.map_err(store_error)?;

        // 1. What changed, chunked.
        let mut outcomes = Vec::new();
        let mut changed = Vec::new();
        for doc in inputs {
            let hash = ingest::content_hash(&doc, cfg, &self.model_id);
            let existing = self.store()?.document(collection, &doc.id).await.map_err(store_error)?;
            if let Some(e) = &existing {
                if e.content_hash == hash {
                    outcomes.push(IngestOutcome { id: doc.id, status: "unchanged", chunks: e.chunks });
                    continue;
                }
            }
            let embedder = self.embedder().clone();
            let (doc, chunks) = tokio::task::spawn_blocking(move || {
                let chunks = ingest::chunks(&doc, cfg, &Counter(&embedder));
                (doc, chunks)
            })
            .await
            .map_err(|e| ApiError::internal(format!("chunking task failed: {e}")))?;
            let n = chunks.len() as u32;
            outcomes.push(IngestOutcome { id: doc.id.clone(), status: if existing.is_some() { "updated" } else { "created" }, chunks: n });
            changed.push((doc, hash, chunks));
        }
        // 2. Every chunk of the request in one call: the batcher packs them by token budget.
        let texts: Vec<String> = changed.iter().flat_map(|(_, _, chunks)| chunks.iter().map(|c| c.text.clone())).collect();
        let enc = self.encode(texts, true).await?;
        let mut vectors = self.embed_encoded(enc).await?.into_iter();
        // 3. Back to documents.
        let mut writes = Vec::with_capacity(changed.len());
        for (doc, hash, chunks) in changed {
            let n = chunks.len() as u32;
            writes.push(DocumentWrite {
                info: DocumentInfo { id: doc.id, content_hash: hash, metadata: doc.metadata, chunks: n, updated_at: voice_rag::store::now_secs() },
                chunks: chunks
                    .into_iter()
                    .zip(vectors.by_ref())
                    .enumerate()
                    .map(|(i, (c, v))| ChunkWrite { index: i as u32, text: c.text, section: c.section, embedding: v })
                    .collect(),
            });
        }
        if !writes.is_empty() {
            self.store()?.upsert(collection, writes).await.map_err(store_error)?;
        }
        for o in &outcomes {
            self.metrics.ingested.with_label_values(&[o.status]).inc();
        }
        self.refresh_index_gauges().await;
        Ok(outcomes)
    }

    pub async fn search(&self, collection: &str, req: SearchRequest) -> Result<Vec<Hit>, ApiError> {
        let start = Instant::now();
        if req.query.trim().is_empty() {
            return Err(ApiError::bad_request("`query` must not be empty").with_param("query"));
        }
        let top_k = match req.top_k {
            None => 5,
            Some(k) if (1..=100).contains(&k) => k as usize,
            Some(k) => return Err(ApiError::bad_request(format!("top_k must be 1 to 100, got {k}")).with_param("top_k")),
        };
        let mode = match req.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("hybrid") => search::SearchMode::Hybrid,
            Some("vector") => search::SearchMode::Vector,
            Some("lexical") | Some("bm25") => search::SearchMode::Lexical,
            Some(m) => return Err(ApiError::bad_request(format!("mode `{m}`: use hybrid, vector or lexical")).with_param("mode")),
        };
        let alpha = match req.alpha {
            None => 0.7,
            Some(a) if (0.0..=1.0).contains(&a) => a,
            Some(a) => return Err(ApiError::bad_request(format!("alpha must be 0 to 1, got {a}")).with_param("alpha")),
        };
        if let Some(t) = req.score_threshold {
            if !t.is_finite() {
                return Err(ApiError::bad_request("score_threshold must be a number").with_param("score_threshold"));
            }
        }
        let filter = match &req.filter {
            None => Filter::All,
            Some(f) => Filter::parse(f).map_err(|e| ApiError::bad_request(e.to_string()).with_param("filter").with_code("invalid_filter"))?,
        };
        // Unknown collection before spending a model call.
        self.store()?.collection(collection).await.map_err(store_error)?;
        let enc = self.encode(vec![req.query.clone()], true).await?;
        let qv = self.embed_encoded(enc).await?.pop().unwrap_or_default();
        let params = SearchParams { top_k, score_threshold: req.score_threshold, filter, mode, alpha };
        let hits = search::search(self.store()?.as_ref(), collection, &req.query, &qv, &params).await.map_err(store_error)?;
        let mode_label = format!("{mode:?}").to_lowercase();
        self.metrics.search_seconds.with_label_values(&[self.store()?.backend(), &mode_label]).observe(start.elapsed().as_secs_f64());
        Ok(hits)
    }

    pub async fn context(&self, collection: &str, req: SearchRequest, max_tokens: Option<i64>) -> Result<Context, ApiError> {
        let budget = match max_tokens {
            None | Some(0) => 512,
            Some(t) if (1..=32768).contains(&t) => t as usize,
            Some(t) => return Err(ApiError::bad_request(format!("max_tokens must be 1 to 32768, got {t}")).with_param("max_tokens")),
        };
        let req = SearchRequest { top_k: Some(req.top_k.unwrap_or(8)), ..req };
        let hits = self.search(collection, req).await?;
        let e = self.embedder().clone();
        tokio::task::spawn_blocking(move || search::assemble_context(hits, budget, &Counter(&e)))
            .await
            .map_err(|e| ApiError::internal(format!("context task failed: {e}")))
    }
}
