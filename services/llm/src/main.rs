//! `voice-llm`: text generation as a service (the stack's Ollama).
//!
//! HTTP (OpenAI-compatible chat and text completions, SSE streaming) on `--port`, gRPC
//! (`voice.llm.v1.TextGeneration`) on `--grpc-port`. Requests are served by one scheduler that
//! interleaves all active generations; see README.md.

mod engine;
mod grpc;
mod http;
mod request;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use voice_models::Fetcher;
use voice_runtime::{
    device::{load_with_fallback, select_device},
    ApiError, Listeners, ServiceArgs, ServiceContext, ServiceSpec,
};
use voice_textgen::{Engine, EngineConfig, LoadedModel};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "llm",
    binary: "voice-llm",
    env_prefix: "VOICE_LLM",
    default_port: 8002,
    default_grpc_port: 9002,
    default_model: "smollm2-135m-instruct",
    default_gpu_memory_budget: "12GB",
    default_max_body_bytes: "4MB",
};

#[derive(Parser, Debug, Clone)]
#[command(version, about = "LLM generation: OpenAI-compatible chat/completions (SSE) and streaming gRPC")]
pub struct LlmArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Context (prompt + generated tokens) allowed per request; 0 = the model's own (llama GGUF
    /// models are capped at 4096).
    #[arg(long, default_value_t = 4096)]
    pub context_length: usize,

    /// Generations in progress at once (they take turns, one token each).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,

    /// max_tokens when a chat request does not say (then capped by the room the prompt leaves).
    #[arg(long, default_value_t = 512)]
    pub default_max_tokens: usize,

    /// System message put first when a chat request has none (Ollama's Modelfile `SYSTEM`).
    /// Some chat templates bring their own otherwise: SmolLM2's ("You are a helpful AI assistant
    /// named SmolLM, trained by Hugging Face") answers a bare "What is the capital of France?"
    /// with a French poem. Empty: the template's own behaviour.
    #[arg(long, default_value = DEFAULT_SYSTEM_PROMPT)]
    pub default_system_prompt: String,

    /// Prompt tokens fed per scheduler turn, so long prompts do not stall other streams.
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,

    /// MiB of K/V kept from finished and cancelled generations so a request that starts with
    /// the same tokens (a conversation's history) prefills only the rest; 0 = off. Used by
    /// llama-architecture GGUF models on the CPU (our own implementation).
    #[arg(long, default_value_t = 256)]
    pub prefix_cache_mb: u64,

    /// Linux nice value of the model's compute threads on the CPU (0..19; higher yields more to
    /// other processes). In the voice stack the TTS of an answer's first sentence then gets
    /// most of the cores while the rest of the answer is decoded.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub cpu_nice: i32,
}

/// What `--default-system-prompt` puts first when a chat request has no system message.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant. Answer the user's question directly and factually.";

#[derive(Clone)]
pub struct AppState {
    pub ctx: ServiceContext,
    pub args: Arc<LlmArgs>,
    engine: Arc<OnceLock<Arc<engine::LlmEngine>>>,
}

impl AppState {
    pub fn engine(&self) -> Result<Arc<engine::LlmEngine>, ApiError> {
        self.ctx.ensure_ready()?;
        self.engine.get().cloned().ok_or_else(|| ApiError::unavailable("the model is still loading", Duration::from_secs(5)))
    }
}

fn load_engine(state: &AppState) -> Result<engine::LlmEngine> {
    let args = &state.args;
    let sa = &args.service;
    let fetcher = Fetcher::new(sa.models_dir.clone());
    let resolved = fetcher
        .resolve(&sa.model, sa.fetch_missing, &["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"])
        .with_context(|| format!("resolving model `{}`", sa.model))?;
    let (id, dir) = (resolved.id.clone(), resolved.dir.clone());
    let estimate = voice_textgen::model::estimate_bytes(&dir, args.context_length.max(1), args.max_batch.max(1))?;
    let chosen = select_device(sa.device);
    let ctx_len = args.context_length;
    let (model, device) =
        load_with_fallback(&chosen, &id, estimate, sa.gpu_memory_budget, &state.ctx.metrics, |d| LoadedModel::load(&id, &dir, d, ctx_len))?;
    state.ctx.device_state.set_primary(&device.label);
    if args.cpu_nice != 0 && !model.set_thread_nice(args.cpu_nice)? {
        tracing::info!(nice = args.cpu_nice, "--cpu-nice applies to the CPU llama implementation only; ignored for this model");
    }
    tracing::info!(model = %id, architecture = %model.info.architecture, context = model.info.context_length,
        chat_template = if model.chat.is_fallback { "chatml (fallback)" } else { "model's own" }, "LLM ready");
    let metrics = Arc::new(engine::LlmMetrics::new(&state.ctx)?);
    let cfg = EngineConfig {
        max_batch: args.max_batch.max(1),
        max_queue: sa.max_queue,
        prefill_chunk: args.prefill_chunk.max(1),
        prefix_cache_bytes: args.prefix_cache_mb.saturating_mul(1 << 20),
    };
    Ok(engine::LlmEngine {
        model_id: id,
        engine: Engine::start(Arc::new(model), cfg, Some(metrics)),
        default_max_tokens: args.default_max_tokens.max(1),
        default_system_prompt: Some(args.default_system_prompt.trim().to_string()).filter(|p| !p.is_empty()),
        loaded_at: Instant::now(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: LlmArgs = voice_runtime::cli::parse(&SPEC)?;
    let ctx = ServiceContext::init(SPEC, args.service.clone())?;
    let state = AppState { ctx: ctx.clone(), args: Arc::new(args.clone()), engine: Arc::new(OnceLock::new()) };
    let listeners = Listeners::bind(&args.service, true).await?;

    let loader = state.clone();
    ctx.load_in_background(state.engine.clone(), move || load_engine(&loader).map(|e| (e.model_id.clone(), e)));

    let grpc = voice_proto::llm::v1::text_generation_server::TextGenerationServer::new(grpc::LlmGrpc { state: state.clone() });
    voice_runtime::serve(ctx, listeners, http::routes(state), Some(tonic::service::Routes::new(grpc))).await
}
