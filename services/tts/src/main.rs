//! `voice-tts`: Kokoro-82M text-to-speech as a service.
//!
//! HTTP (OpenAI-compatible `/v1/audio/speech`, streamed per sentence; `/v1/audio/voices`,
//! `/v1/models`) on `--port`, gRPC (`voice.tts.v1.TextToSpeech`, streamed PCM) on `--grpc-port`.
//! The model is voice-kokoro, the text front end voice-g2p. See README.md.

mod engine;
mod grpc;
mod http;
mod voice_names;

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use clap::Parser;
use voice_g2p::{G2p, Variant};
use voice_kokoro::{voices::Voices, Kokoro, Precision, Weights};
use voice_models::Fetcher;
use voice_runtime::{
    device::{load_with_fallback, select_device},
    ApiError, Listeners, ModelSlot, ServiceArgs, ServiceContext, ServiceSpec,
};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "tts",
    binary: "voice-tts",
    env_prefix: "VOICE_TTS",
    default_port: 8004,
    default_grpc_port: 9004,
    default_model: "kokoro-82m",
    default_gpu_memory_budget: "3GB",
    default_max_body_bytes: "1MB",
};

#[derive(Parser, Debug, Clone)]
#[command(version, about = "Kokoro-82M text-to-speech: OpenAI-compatible /v1/audio/speech (streamed), voices and blends, streaming gRPC")]
pub struct TtsArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Voice when a request names none (an id or a blend).
    #[arg(long, default_value = "af_heart")]
    pub voice: String,

    /// Longest accepted `input`, in characters; longer requests get 413 (split them). OpenAI's
    /// limit is 4096.
    #[arg(long, default_value_t = 20_000)]
    pub max_input_chars: usize,

    /// Directory of voice packs (`<id>.bin`); default: the model directory's `voices/`.
    #[arg(long)]
    pub voices_dir: Option<std::path::PathBuf>,

    /// Directory with vocab.json and the misaki lexicons; default: the model directory (for
    /// `kokoro-82m-hf`, the registry `kokoro-82m` directory).
    #[arg(long)]
    pub g2p_dir: Option<std::path::PathBuf>,

    /// Stream inside a piece: speech frames (25 ms) in a piece's first chunk, after its leading
    /// silence (16 is the measured choice); later chunks double up to --max-chunk-frames. 0 (the
    /// default): each piece in one pass, the reference rendering. Chunks are rendered with the
    /// generator's statistics over the chunk, 2-3 dB of log-mel from the one-pass rendering, and
    /// whisper-tiny.en mis-hears some of it (the browser test's "office cat" became "office,
    /// Cat" and the answer went wrong), so it is opt-in (benches/README.md).
    #[arg(long, default_value_t = 0)]
    pub first_chunk_frames: usize,

    /// Largest streamed chunk, in frames (25 ms).
    #[arg(long, default_value_t = voice_kokoro::Chunking::STREAM.max_frames)]
    pub max_chunk_frames: usize,

    /// The decoder's and generator's convolutions on the CPU: int8 (AVX-512 VNNI kernels, about
    /// 1.7x faster, 0.45-0.67 dB of log-mel from f32; f32 where the CPU lacks VNNI) or f32 (the
    /// reference).
    #[arg(long, default_value = "int8", value_parser = parse_precision)]
    pub precision: Precision,

    /// espeak-ng program for out-of-lexicon words.
    #[arg(long, default_value = "espeak-ng")]
    pub espeak: String,
}

#[derive(Clone)]
pub struct AppState {
    pub ctx: ServiceContext,
    pub args: Arc<TtsArgs>,
    engine: Arc<OnceLock<Arc<engine::TtsEngine>>>,
}

impl AppState {
    /// The engine, or 503 while the model loads / when shutting down.
    pub fn engine(&self) -> Result<Arc<engine::TtsEngine>, ApiError> {
        self.ctx.ensure_ready()?;
        self.engine.get().cloned().ok_or_else(|| ApiError::unavailable("the model is still loading", std::time::Duration::from_secs(5)))
    }
}

/// Weights from the directory: the registry ONNX export, or the upstream checkpoint.
fn load_weights(dir: &std::path::Path, device: &candle_core::Device) -> Result<Weights> {
    let onnx = dir.join("model.onnx");
    if onnx.is_file() {
        return Weights::from_onnx(&onnx, device);
    }
    for name in ["kokoro-v1_0.safetensors", "kokoro-v1_0.pth"] {
        let p = dir.join(name);
        if p.is_file() {
            return Weights::from_checkpoint(&p, device);
        }
    }
    bail!("{} has neither model.onnx nor kokoro-v1_0.pth / .safetensors", dir.display())
}

fn load_model(dir: &std::path::Path, device: &candle_core::Device, precision: Precision) -> Result<Kokoro> {
    let m = Kokoro::with_precision(&load_weights(dir, device)?, device, precision)?;
    tracing::info!(device = ?device, precision = ?m.precision(), "Kokoro loaded");
    Ok(m)
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "int8" => Ok(Precision::Int8),
        "f32" => Ok(Precision::F32),
        other => Err(format!("`{other}`: int8 or f32")),
    }
}

fn load_engine(state: &AppState) -> Result<engine::TtsEngine> {
    let args = &state.args;
    let sa = &args.service;
    let fetcher = Fetcher::new(sa.models_dir.clone());
    let resolved = fetcher
        .resolve(&sa.model, sa.fetch_missing, &["config.json", "kokoro-v1_0.pth"])
        .with_context(|| format!("resolving model `{}`", sa.model))?;
    let (id, dir) = (resolved.id.clone(), resolved.dir.clone());
    // Voices and the front end's data: beside the weights, or from the registry model.
    let data_dir = if dir.join("vocab.json").is_file() {
        dir.clone()
    } else {
        fetcher.resolve("kokoro-82m", sa.fetch_missing, &[]).context("voices and lexicons come from `kokoro-82m`")?.dir
    };
    let g2p_dir = args.g2p_dir.clone().unwrap_or_else(|| data_dir.clone());
    let voices_dir = args.voices_dir.clone().unwrap_or_else(|| data_dir.join("voices"));
    let voices = Voices::load_dir(&voices_dir)?;
    let load_g2p = |v| -> Result<G2p> {
        Ok(G2p::load(&g2p_dir, v).with_context(|| format!("text front end data in {}", g2p_dir.display()))?.with_espeak_program(&args.espeak))
    };
    let (g2p_us, g2p_gb) = (load_g2p(Variant::Us)?, load_g2p(Variant::Gb)?);
    if let Err(e) = voices.resolve(&args.voice) {
        bail!("--voice {}: {e}", args.voice);
    }
    // f32 weights (~330 MB) plus activations of a 510-token piece.
    let estimate = 1_200_000_000;
    let chosen = select_device(sa.device);
    let (model, device) =
        load_with_fallback(&chosen, &id, estimate, sa.gpu_memory_budget, &state.ctx.metrics, |d| load_model(&dir, d, args.precision))?;
    tracing::info!(model = %id, voices = voices.len(), default_voice = %args.voice, "text-to-speech model ready");
    let cpu_dir = dir.clone();
    let precision = args.precision;
    let slot = ModelSlot::new(model, device, state.ctx.device_state.clone(), move |d| load_model(&cpu_dir, d, precision));
    Ok(engine::TtsEngine {
        model_id: id,
        slot,
        voices,
        g2p_us,
        g2p_gb,
        queue: state.ctx.queue.clone(),
        metrics: engine::TtsMetrics::new(&state.ctx)?,
        default_voice: args.voice.clone(),
        max_input_chars: args.max_input_chars.max(1),
        chunking: voice_kokoro::Chunking {
            first_frames: args.first_chunk_frames,
            max_frames: args.max_chunk_frames.max(args.first_chunk_frames),
            ..voice_kokoro::Chunking::STREAM
        },
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: TtsArgs = voice_runtime::cli::parse(&SPEC)?;
    let ctx = ServiceContext::init(SPEC, args.service.clone())?;
    let state = AppState { ctx: ctx.clone(), args: Arc::new(args.clone()), engine: Arc::new(OnceLock::new()) };
    let listeners = Listeners::bind(&args.service, true).await?;

    let loader = state.clone();
    ctx.load_in_background(state.engine.clone(), move || load_engine(&loader).map(|e| (e.model_id.clone(), e)));

    let grpc = voice_proto::tts::v1::text_to_speech_server::TextToSpeechServer::new(grpc::TtsGrpc { state: state.clone() });
    voice_runtime::serve(ctx, listeners, http::routes(state), Some(tonic::service::Routes::new(grpc))).await
}
