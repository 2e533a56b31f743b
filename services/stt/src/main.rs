//! `voice-stt`: Whisper speech-to-text as a service.
//!
//! HTTP (OpenAI-compatible) on `--port`, gRPC (`voice.stt.v1.SpeechToText`) on `--grpc-port`; see
//! README.md for the API. The model loads after the listeners are up: `/healthz` answers at once,
//! `/readyz` turns 200 when the model is ready.

mod engine;
mod formats;
mod grpc;
mod http;

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::Parser;
use voice_models::Fetcher;
use voice_runtime::{
    device::{load_with_fallback, select_device},
    ApiError, Listeners, ModelSlot, ServiceArgs, ServiceContext, ServiceSpec,
};
use voice_whisper::WhisperModel;

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "stt",
    binary: "voice-stt",
    env_prefix: "VOICE_STT",
    default_port: 8001,
    default_grpc_port: 9001,
    default_model: "whisper-tiny.en",
    default_gpu_memory_budget: "4GB",
    default_max_body_bytes: "25MB",
};

#[derive(Parser, Debug, Clone)]
#[command(version, about = "Whisper speech-to-text: OpenAI-compatible HTTP and streaming gRPC")]
pub struct SttArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Longest accepted audio, in seconds (uploads and unary gRPC).
    #[arg(long, default_value_t = 900.0)]
    pub max_audio_seconds: f64,

    /// Streaming: an utterance this long is finalised even without EndOfUtterance.
    #[arg(long, default_value_t = 30.0)]
    pub max_utterance_seconds: f64,

    /// Encoder window for streaming recognition (the voice agent): `fit` encodes an utterance of
    /// up to 4 s plus 1.5 s of padding instead of Whisper's 30 s window (4-5x less time for a
    /// short question), falling back to 30 s when the result looks wrong; `full` always uses
    /// 30 s. Uploads and unary Transcribe always use 30 s.
    #[arg(long, value_enum, default_value_t = StreamWindow::Fit)]
    pub stream_window: StreamWindow,

    /// Largest gRPC message accepted, in bytes (a unary Transcribe carries the whole file).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_grpc_message_bytes: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamWindow {
    Fit,
    Full,
}

impl StreamWindow {
    pub fn encoder_window(self) -> voice_whisper::EncoderWindow {
        match self {
            StreamWindow::Fit => voice_whisper::EncoderWindow::fit(),
            StreamWindow::Full => voice_whisper::EncoderWindow::Full,
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ctx: ServiceContext,
    pub args: Arc<SttArgs>,
    engine: Arc<OnceLock<Arc<engine::SttEngine>>>,
    pub started_unix: u64,
}

impl AppState {
    /// The engine, or 503 while the model loads / when shutting down.
    pub fn engine(&self) -> Result<Arc<engine::SttEngine>, ApiError> {
        self.ctx.ensure_ready()?;
        self.engine.get().cloned().ok_or_else(|| ApiError::unavailable("the model is still loading", std::time::Duration::from_secs(5)))
    }
}

fn load_engine(state: &AppState) -> Result<engine::SttEngine> {
    let args = &state.args.service;
    let fetcher = Fetcher::new(args.models_dir.clone());
    let resolved = fetcher
        .resolve(&args.model, args.fetch_missing, &["config.json", "tokenizer.json", "model.safetensors"])
        .with_context(|| format!("resolving model `{}`", args.model))?;
    let dir = resolved.dir.clone();
    let id = resolved.id.clone();
    let estimate = WhisperModel::estimate_gpu_bytes(&dir)?;
    let chosen = select_device(args.device);
    let (model, device) =
        load_with_fallback(&chosen, &id, estimate, args.gpu_memory_budget, &state.ctx.metrics, |d| WhisperModel::load(&id, &dir, d))?;
    let languages: Vec<&'static str> = if model.is_multilingual() { model.tokenizer.languages.iter().map(|(c, _)| *c).collect() } else { vec!["en"] };
    let multilingual = model.is_multilingual();
    let (id2, dir2) = (id.clone(), dir.clone());
    let slot = ModelSlot::new(model, device, state.ctx.device_state.clone(), move |d| WhisperModel::load(&id2, &dir2, d));
    Ok(engine::SttEngine {
        model_id: id,
        languages,
        multilingual,
        slot,
        queue: state.ctx.queue.clone(),
        metrics: engine::SttMetrics::new(&state.ctx)?,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: SttArgs = voice_runtime::cli::parse(&SPEC)?;
    let ctx = ServiceContext::init(SPEC, args.service.clone())?;
    let state = AppState {
        ctx: ctx.clone(),
        args: Arc::new(args.clone()),
        engine: Arc::new(OnceLock::new()),
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    let listeners = Listeners::bind(&args.service, true).await?;

    // Load the model in the background so health checks answer during the load.
    let loader_state = state.clone();
    ctx.load_in_background(state.engine.clone(), move || load_engine(&loader_state).map(|e| (e.model_id.clone(), e)));

    let grpc_service = voice_proto::stt::v1::speech_to_text_server::SpeechToTextServer::new(grpc::SttGrpc { state: state.clone() })
        .max_decoding_message_size(args.max_grpc_message_bytes)
        .max_encoding_message_size(args.max_grpc_message_bytes);
    let routes = tonic::service::Routes::new(grpc_service);
    voice_runtime::serve(ctx, listeners, http::routes(state), Some(routes)).await
}
