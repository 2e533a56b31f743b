//! `voice-embed`: sentence embeddings and retrieval (RAG) as a service.
//!
//! HTTP (OpenAI-compatible `/v1/embeddings`, plus collections, ingest, search and context) on
//! `--port`, gRPC (`voice.embed.v1.Embeddings`) on `--grpc-port`. The model sits behind a
//! token-budget batcher (voice-embeddings); retrieval and storage are voice-rag. See README.md.

mod core;
mod grpc;
mod http;

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use voice_embeddings::{Batcher, BatcherConfig, Embedder};
use voice_models::Fetcher;
use voice_rag::{store::Store, ChunkConfig, EmbeddedStore, PostgresStore};
use voice_runtime::{
    device::{load_with_fallback, select_device},
    ApiError, Listeners, ModelSlot, ServiceArgs, ServiceContext, ServiceSpec,
};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "embed",
    binary: "voice-embed",
    env_prefix: "VOICE_EMBED",
    default_port: 8003,
    default_grpc_port: 9003,
    default_model: "all-minilm-l6-v2",
    default_gpu_memory_budget: "3GB",
    default_max_body_bytes: "16MB",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// redb file in --data-dir: no server needed, crash-safe, one replica.
    Embedded,
    /// PostgreSQL + pgvector at --pg-url: shared by several replicas.
    Postgres,
}

#[derive(Parser, Debug, Clone)]
#[command(version, about = "Embeddings + RAG: OpenAI-compatible /v1/embeddings, collections, ingest, hybrid search, context; gRPC")]
pub struct EmbedArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Where collections are stored.
    #[arg(long, value_enum, default_value = "embedded")]
    pub store: StoreKind,

    /// Directory of the embedded store (default: $XDG_DATA_HOME/voice-ai/rag, else ~/.local/share/voice-ai/rag).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL connection (`postgres://user:pass@host:5432/db` or `host=... user=...`), for --store postgres.
    #[arg(long)]
    pub pg_url: Option<String>,

    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = 8)]
    pub pg_max_connections: usize,

    /// Inputs one /v1/embeddings request may carry (OpenAI allows 2048).
    #[arg(long, default_value_t = 2048)]
    pub max_inputs: usize,

    /// Documents one ingest request may carry.
    #[arg(long, default_value_t = 1000)]
    pub max_documents: usize,

    /// Padded tokens per model call (items x longest).
    #[arg(long, default_value_t = 16384)]
    pub max_batch_tokens: usize,

    /// Inputs per model call.
    #[arg(long, default_value_t = 64)]
    pub max_batch_items: usize,

    /// Chunk size in model tokens (the heading path included).
    #[arg(long, default_value_t = 200)]
    pub chunk_tokens: usize,

    /// Tokens of whole sentences repeated between consecutive chunks.
    #[arg(long, default_value_t = 40)]
    pub chunk_overlap: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub ctx: ServiceContext,
    pub args: Arc<EmbedArgs>,
    core: Arc<OnceLock<Arc<core::Core>>>,
}

impl AppState {
    pub fn core(&self) -> Result<Arc<core::Core>, ApiError> {
        self.ctx.ensure_ready()?;
        self.core.get().cloned().ok_or_else(|| ApiError::unavailable("the model is still loading", Duration::from_secs(5)))
    }
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("voice-ai/rag")
}

async fn load(state: &AppState) -> Result<core::Core> {
    let args = state.args.clone();
    let sa = &args.service;
    let fetcher = Fetcher::new(sa.models_dir.clone());
    let model = sa.model.clone();
    let fetch_missing = sa.fetch_missing;
    let resolved = tokio::task::spawn_blocking(move || {
        fetcher.resolve(&model, fetch_missing, &["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"])
    })
    .await?
    .with_context(|| format!("resolving model `{}`", sa.model))?;
    let (id, dir) = (resolved.id.clone(), resolved.dir.clone());
    // Weights (f32) plus activations for a full batch; small next to the 3 GB share.
    let weights = std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    let estimate = weights + 512 * 1024 * 1024;
    let chosen = select_device(sa.device);
    let (ctx, budget) = (state.ctx.clone(), sa.gpu_memory_budget);
    let (load_id, load_dir) = (id.clone(), dir.clone());
    let (embedder, device) =
        tokio::task::spawn_blocking(move || load_with_fallback(&chosen, &load_id, estimate, budget, &ctx.metrics, |d| Embedder::load(&load_dir, d)))
            .await??;
    tracing::info!(model = %id, dimensions = embedder.dimensions, pooling = ?embedder.pooling, max_tokens = embedder.max_seq_len, "embedding model ready");
    let cpu_dir = dir.clone();
    let slot = Arc::new(ModelSlot::new(embedder, device, state.ctx.device_state.clone(), move |d| Embedder::load(&cpu_dir, d)));
    let metrics = Arc::new(core::EmbedMetrics::new(&state.ctx)?);
    let run_slot = slot.clone();
    let batcher = Batcher::start(
        move |batch| run_slot.run(|m, _| m.embed(batch)),
        BatcherConfig {
            max_batch_tokens: args.max_batch_tokens.max(1),
            max_batch_items: args.max_batch_items.max(1),
            max_queue: sa.max_queue.max(1),
        },
        Some(metrics.clone()),
    );
    let max_chunk = slot.primary().max_seq_len.saturating_sub(2);
    let chunking = ChunkConfig { max_tokens: args.chunk_tokens.clamp(16, max_chunk.max(16)), overlap_tokens: args.chunk_overlap };
    let core = core::Core { model_id: id, slot, batcher, store: OnceLock::new(), metrics, chunking };
    Ok(core)
}

async fn open_store(args: &EmbedArgs, dims: usize) -> Result<Arc<dyn Store>> {
    Ok(match args.store {
        StoreKind::Embedded => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            Arc::new(tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??)
        }
        StoreKind::Postgres => {
            let url = args.pg_url.clone().context("--store postgres needs --pg-url (or VOICE_EMBED_PG_URL)")?;
            Arc::new(PostgresStore::connect(&url, dims, args.pg_max_connections).await?)
        }
    })
}

/// One attempt to open the store: on success it serves retrieval; either way `/readyz`
/// (`components.store`) and the log say how it went.
async fn try_open_store(state: &AppState, core: &core::Core, attempt: u32) -> bool {
    let backend = format!("{:?}", state.args.store).to_lowercase();
    match open_store(&state.args, core.dimensions()).await {
        Ok(store) => {
            let _ = core.store.set(store);
            core.refresh_index_gauges().await;
            state.ctx.set_component("store", serde_json::json!({"backend": backend, "status": "open"}));
            tracing::info!(backend = %backend, attempt, "document store open");
            true
        }
        Err(e) => {
            let why = format!("{e:#}");
            state.ctx.set_component("store", serde_json::json!({"backend": backend, "status": "retrying", "error": why, "attempt": attempt}));
            tracing::warn!(backend = %backend, attempt, error = %why, "document store not available yet; retrying in the background");
            false
        }
    }
}

/// Retry with backoff while the store is held by another process (the previous pod of a rolling
/// update holds the embedded file until it exits) or the database is unreachable. The service is
/// ready for embeddings meanwhile; retrieval answers 503 until this succeeds.
async fn keep_opening_store(state: AppState, core: Arc<core::Core>) {
    let mut delay = Duration::from_millis(500);
    for attempt in 2.. {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = state.ctx.shutdown.cancelled() => return,
        }
        if try_open_store(&state, &core, attempt).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: EmbedArgs = voice_runtime::cli::parse(&SPEC)?;
    if args.store == StoreKind::Postgres && args.pg_url.is_none() {
        anyhow::bail!("--store postgres needs --pg-url (or VOICE_EMBED_PG_URL)");
    }
    let ctx = ServiceContext::init(SPEC, args.service.clone())?;
    let state = AppState { ctx: ctx.clone(), args: Arc::new(args.clone()), core: Arc::new(OnceLock::new()) };
    let listeners = Listeners::bind(&args.service, true).await?;

    let loader = state.clone();
    tokio::spawn(async move {
        match load(&loader).await {
            Ok(c) => {
                let id = c.model_id.clone();
                let core = Arc::new(c);
                let _ = loader.core.set(core.clone());
                // The store's first attempt happens before `ready` so that a normal start never
                // shows a ready service without its collections.
                if !try_open_store(&loader, &core, 1).await {
                    tokio::spawn(keep_opening_store(loader.clone(), core.clone()));
                }
                loader.ctx.set_ready(&id);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not start (model or store); exiting");
                loader.ctx.set_failed(format!("{e:#}"));
                std::process::exit(2);
            }
        }
    });

    let grpc = voice_proto::embed::v1::embeddings_server::EmbeddingsServer::new(grpc::EmbedGrpc { state: state.clone() });
    voice_runtime::serve(ctx, listeners, http::routes(state), Some(tonic::service::Routes::new(grpc))).await
}
