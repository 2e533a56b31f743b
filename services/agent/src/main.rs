//! `voice-agent`: the voice agent as a service.
//!
//! HTTP on `--port` (`POST /api/token`, `GET /v1/conversations`, health, metrics), gRPC
//! (`voice.agent.v1.Agent`) on `--grpc-port`, the web frontend and its token endpoint on
//! `--frontend-port`. Rooms through LiveKit's native core (voice-livekit); the loop itself is
//! voice_agent::conversation. See README.md.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use voice_agent::{
    backends::{BackendUrls, Backends, ReplySettings},
    conversation::{AgentConfig, Shared},
    dispatch::Dispatcher,
    end_of_turn::{EndOfTurnModel, SmartTurnModel},
    grpc::AgentGrpc,
    http::{self, TokenService},
    livekit::LiveKitJoiner,
    metrics::AgentMetrics,
    token::LiveKitKeys,
    turn::{TurnConfig, FIXED_END_SILENCE},
    vad::Silero,
};
use voice_models::Fetcher;
use voice_runtime::{
    auth::Secret,
    cli::{parse_duration, ServiceArgs},
    Listeners, ServiceContext, ServiceSpec,
};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "agent",
    binary: "voice-agent",
    env_prefix: "VOICE_AGENT",
    default_port: 8005,
    default_grpc_port: 9005,
    // The agent's own model is the voice activity detector; the rest live in the services.
    default_model: "silero-vad",
    default_gpu_memory_budget: "3GB",
    default_max_body_bytes: "64KB",
};

#[derive(Parser, Debug, Clone)]
#[command(version, about = "The voice agent: LiveKit rooms, VAD and turn-taking, STT -> RAG -> LLM -> TTS, token endpoint and web frontend")]
struct AgentArgs {
    #[command(flatten)]
    service: ServiceArgs,

    /// LiveKit server URL the agent connects to.
    #[arg(long, default_value = "ws://127.0.0.1:7880")]
    livekit_url: String,
    /// LiveKit URL handed to browsers (default: --livekit-url).
    #[arg(long)]
    livekit_public_url: Option<String>,
    /// LiveKit API key (`devkey` for `livekit-server --dev`).
    #[arg(long)]
    livekit_api_key: Option<String>,
    /// LiveKit API secret (`secret` for `livekit-server --dev`); prefer the file or the environment.
    #[arg(long)]
    livekit_api_secret: Option<Secret>,
    /// File holding the LiveKit API secret (e.g. a mounted Kubernetes Secret).
    #[arg(long)]
    livekit_api_secret_file: Option<PathBuf>,
    /// liblivekit_ffi.so (default: $LIVEKIT_FFI_LIB, else the `livekit-ffi` entry of the model cache).
    #[arg(long)]
    livekit_ffi: Option<PathBuf>,
    /// Lifetime of the tokens the endpoint issues.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    token_ttl: Duration,
    /// Rooms the agent serves at once; more get 503.
    #[arg(long, default_value_t = 8)]
    max_rooms: usize,

    /// voice-stt gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    stt_url: String,
    /// voice-llm gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:9002")]
    llm_url: String,
    /// voice-embed gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:9003")]
    embed_url: String,
    /// voice-tts gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:9004")]
    tts_url: String,
    /// Bearer key for the four services when they require one.
    #[arg(long)]
    backend_api_key: Option<Secret>,
    /// File holding the backend key.
    #[arg(long)]
    backend_api_key_file: Option<PathBuf>,
    /// PEM CA certificate trusted for `https://` backend URLs (services run with --tls-cert).
    #[arg(long)]
    backend_ca_file: Option<PathBuf>,
    /// Deadline of a unary backend call and of opening a stream.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    backend_timeout: Duration,
    /// Retries of a backend call that failed because the service was unreachable.
    #[arg(long, default_value_t = 3)]
    backend_retries: u32,

    /// RAG collection in voice-embed to answer from; empty: no retrieval.
    #[arg(long, default_value = "")]
    collection: String,
    /// Token budget of the retrieved passages.
    #[arg(long, default_value_t = 300)]
    context_tokens: u32,
    /// LLM model (empty: voice-llm's).
    #[arg(long, default_value = "")]
    llm_model: String,
    /// Longest reply, in tokens.
    #[arg(long, default_value_t = 80)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy, reproducible).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// System prompt.
    #[arg(long, default_value_t = AgentConfig::default().system_prompt)]
    system_prompt: String,
    /// Tokens of conversation history sent with each question.
    #[arg(long, default_value_t = 1024)]
    memory_tokens: usize,
    /// Said when a user joins (empty: none).
    #[arg(long, default_value = "")]
    greeting: String,
    /// TTS voice (an id or a blend like af_heart:0.7+am_adam:0.3).
    #[arg(long, default_value = "af_heart")]
    voice: String,
    /// Speaking rate.
    #[arg(long, default_value_t = 1.0)]
    speed: f32,
    /// STT model (empty: voice-stt's).
    #[arg(long, default_value = "")]
    stt_model: String,
    /// Language of the user (empty: detect).
    #[arg(long, default_value = "en")]
    language: String,
    /// Partial transcripts while the user speaks, every this many ms of new audio (0: none).
    #[arg(long, default_value_t = 1000)]
    partial_interval_ms: u32,

    /// How the end of the user's turn is decided: `smart-turn` (a short silence, then the
    /// Smart Turn model says whether the thought is finished) or `none` (a fixed silence).
    #[arg(long, value_enum, default_value = "smart-turn")]
    turn_detector: TurnDetectorKind,
    /// The end-of-turn model (a model id of the manifest).
    #[arg(long, default_value = "smart-turn-v3")]
    turn_model: String,
    /// Silence after which the turn ends (`none`), or at which the model's "finished" ends it
    /// (`smart-turn`, asked at --final-candidate-silence); default 500ms without the model, 200ms
    /// with it.
    #[arg(long, value_parser = parse_duration)]
    end_of_turn_silence: Option<Duration>,
    /// With the model: the longest silence waited when it says the user has not finished.
    #[arg(long, default_value = "2500ms", value_parser = parse_duration)]
    max_end_of_turn: Duration,
    /// With the model: the probability above which a pause ends the turn.
    #[arg(long, default_value_t = voice_smart_turn::THRESHOLD)]
    end_of_turn_threshold: f32,
    /// Silence after which voice-stt starts the final transcript (kept if no speech follows
    /// before the end of the turn), so transcription overlaps the end-of-turn silence; 0: start
    /// it only at the end of the turn. With the end-of-turn model: the silence at which the model
    /// is asked (partials held), the final transcript starting at its "finished".
    #[arg(long, default_value = "96ms", value_parser = parse_duration)]
    final_candidate_silence: Duration,
    /// Speech needed for an utterance to count.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    min_speech: Duration,
    /// Speech needed to interrupt the agent; shorter sounds and backchannels do not.
    #[arg(long, default_value = "400ms", value_parser = parse_duration)]
    min_interruption: Duration,
    /// Speech probability that starts speech (Silero VAD).
    #[arg(long, default_value_t = 0.5)]
    vad_threshold: f32,
    /// Words before the first reply piece may end at a comma (0: whole sentences only).
    #[arg(long, default_value_t = 4)]
    first_clause_words: usize,

    /// Port of the web frontend and its token endpoint (0: no frontend).
    #[arg(long, default_value_t = 3000)]
    frontend_port: u16,
    /// The built frontend (default: frontend/dist beside the working directory, if it exists).
    #[arg(long)]
    frontend_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum TurnDetectorKind {
    SmartTurn,
    None,
}

fn read_secret(flag: Option<Secret>, file: Option<&PathBuf>, what: &str) -> Result<Option<Secret>> {
    if let Some(s) = flag {
        return Ok(Some(s));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the {what} file {}", path.display()))?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    match line {
        Some(l) => Ok(Some(l.parse().map_err(|e| anyhow::anyhow!("{e}"))?)),
        None => bail!("the {what} file {} is empty", path.display()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: AgentArgs = voice_runtime::cli::parse(&SPEC)?;
    let ctx = ServiceContext::init(SPEC, args.service.clone())?;

    // LiveKit's own variable names (LIVEKIT_API_KEY / LIVEKIT_API_SECRET, what its SDKs and the
    // Kubernetes manifests use) are accepted after ours.
    let env_secret = || std::env::var("LIVEKIT_API_SECRET").ok().filter(|s| !s.is_empty()).and_then(|s| s.parse::<Secret>().ok());
    let keys = LiveKitKeys {
        api_key: args
            .livekit_api_key
            .clone()
            .or_else(|| std::env::var("LIVEKIT_API_KEY").ok().filter(|s| !s.is_empty()))
            .context("--livekit-api-key (or VOICE_AGENT_LIVEKIT_API_KEY, LIVEKIT_API_KEY) is required: `devkey` for livekit-server --dev")?,
        api_secret: read_secret(args.livekit_api_secret.clone(), args.livekit_api_secret_file.as_ref(), "LiveKit API secret")?
            .or_else(env_secret)
            .context(
                "--livekit-api-secret-file (or VOICE_AGENT_LIVEKIT_API_SECRET, LIVEKIT_API_SECRET) is required: `secret` for livekit-server --dev",
            )?,
    };
    let backend_key = read_secret(args.backend_api_key.clone(), args.backend_api_key_file.as_ref(), "backend API key")?;
    let settings = ReplySettings {
        llm_model: args.llm_model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: Some(0),
        voice: args.voice.clone(),
        speed: args.speed,
        stt_model: args.stt_model.clone(),
        language: args.language.clone(),
        partial_interval_ms: args.partial_interval_ms,
        collection: args.collection.clone(),
        context_tokens: args.context_tokens,
        call_timeout: args.backend_timeout,
        retries: args.backend_retries,
    };
    let urls = BackendUrls { stt: args.stt_url.clone(), llm: args.llm_url.clone(), embed: args.embed_url.clone(), tts: args.tts_url.clone() };
    let backend_ca = match &args.backend_ca_file {
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("reading --backend-ca-file {}", p.display()))?;
            voice_runtime::transport::count_pem_certificates(&pem).with_context(|| format!("--backend-ca-file {}", p.display()))?;
            Some(pem)
        }
        None => None,
    };
    let backends = Backends::with_tls(&urls, backend_key.as_ref().map(|k| k.expose()), backend_ca.as_deref(), settings)?;
    if !(0.0..1.0).contains(&args.end_of_turn_threshold) {
        bail!("--end-of-turn-threshold must be in [0, 1), got {}", args.end_of_turn_threshold);
    }
    let mut config = AgentConfig {
        turn: TurnConfig {
            activation: args.vad_threshold,
            deactivation: (args.vad_threshold - 0.15).max(0.05),
            min_speech: args.min_speech,
            end_silence: args.end_of_turn_silence.unwrap_or(FIXED_END_SILENCE),
            candidate_silence: args.final_candidate_silence,
            min_interruption: args.min_interruption.max(args.min_speech),
            ..TurnConfig::default()
        },
        system_prompt: args.system_prompt.clone(),
        memory_tokens: args.memory_tokens,
        first_clause_words: args.first_clause_words,
        greeting: args.greeting.clone(),
        turn_threshold: args.end_of_turn_threshold,
        ..AgentConfig::default()
    };
    let metrics = AgentMetrics::new(&ctx.metrics)?;
    let reconnects = metrics.reconnects.clone();

    let dispatcher: Arc<OnceLock<Arc<Dispatcher>>> = Arc::new(OnceLock::new());
    let token_service = TokenService {
        keys: keys.clone(),
        public_url: args.livekit_public_url.clone().unwrap_or_else(|| args.livekit_url.clone()),
        ttl: args.token_ttl,
        dispatcher: dispatcher.clone(),
    };
    let listeners = Listeners::bind(&args.service, true).await?;

    // The frontend on its own port.
    if args.frontend_port != 0 {
        let dir = args.frontend_dir.clone().or_else(|| Some(PathBuf::from("frontend/dist")).filter(|d| d.join("index.html").is_file()));
        let addr = format!("{}:{}", args.service.host, args.frontend_port);
        let scheme = if ctx.uses_tls() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding the frontend on {addr}"))?;
        match &dir {
            Some(d) => tracing::info!(url = %format!("{scheme}://{addr}"), dir = %d.display(), "frontend"),
            None => {
                tracing::warn!(url = %format!("{scheme}://{addr}"), "frontend not built (frontend/dist missing): serving the token endpoint only")
            }
        }
        let app = http::frontend(token_service.clone(), dir);
        // The browser-facing port gets the same TLS, header deadline and connection cap as the API.
        tokio::spawn(voice_runtime::transport::serve_http(listener, app, ctx.connection_policy(false), ctx.shutdown.clone()));
    }

    // Load the VAD and LiveKit's core off the async threads; then the agent can take rooms.
    let cell = dispatcher.clone();
    let ffi_path = args.livekit_ffi.clone();
    let (url, max_rooms, shutdown) = (args.livekit_url.clone(), args.max_rooms, ctx.shutdown.clone());
    let models_dir = args.service.models_dir.clone();
    let (model, fetch) = (args.service.model.clone(), args.service.fetch_missing);
    let loaded: Arc<OnceLock<Arc<()>>> = Arc::new(OnceLock::new());
    struct TurnChoice {
        detector: TurnDetectorKind,
        model: String,
        silence: Option<Duration>,
        max: Duration,
    }
    let turn =
        TurnChoice { detector: args.turn_detector, model: args.turn_model.clone(), silence: args.end_of_turn_silence, max: args.max_end_of_turn };
    ctx.load_in_background(loaded, move || {
        let fetcher = Fetcher::new(models_dir);
        let vad_dir =
            fetcher.resolve(&model, fetch, &["silero_vad_16k.safetensors"]).with_context(|| format!("resolving the VAD model `{model}`"))?.dir;
        let vad = Silero::load(&vad_dir.join("silero_vad_16k.safetensors"))?;
        let end_of_turn: Option<Arc<dyn EndOfTurnModel>> = match turn.detector {
            TurnDetectorKind::None => None,
            TurnDetectorKind::SmartTurn => {
                let loaded = fetcher
                    .resolve(&turn.model, fetch, &[voice_smart_turn::MODEL_FILE])
                    .with_context(|| format!("resolving the end-of-turn model `{}`", turn.model))
                    .and_then(|r| SmartTurnModel::load(&r.dir));
                match loaded {
                    Ok(m) => Some(Arc::new(m)),
                    // Turn-taking still works without it: say so loudly and use the fixed silence.
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "end-of-turn model unavailable: turns end after a fixed silence (--turn-detector none)");
                        None
                    }
                }
            }
        };
        if end_of_turn.is_some() {
            config.turn = config.turn.with_end_of_turn_model(turn.silence, turn.max);
        }
        tracing::info!(
            detector = if end_of_turn.is_some() { "smart-turn" } else { "fixed silence" },
            silence_ms = config.turn.end_silence.as_millis() as u64,
            max_silence_ms = config.turn.max_end_silence.map(|d| d.as_millis() as u64),
            "end of turn"
        );
        let config = Arc::new(config);
        let ffi_path = match ffi_path.or_else(|| std::env::var_os("LIVEKIT_FFI_LIB").map(PathBuf::from)) {
            Some(p) => p,
            None => {
                fetcher.resolve("livekit-ffi", fetch, &[]).context("resolving LiveKit's native core `livekit-ffi`")?.dir.join("liblivekit_ffi.so")
            }
        };
        let joiner = LiveKitJoiner::new(&ffi_path, url, keys)?.with_reconnect_counter(reconnects);
        let shared = Shared { backends, vad: Arc::new(vad), end_of_turn, metrics, config };
        let _ = cell.set(Dispatcher::new(shared, Arc::new(joiner), max_rooms, shutdown));
        Ok((model.clone(), ()))
    });

    let grpc = voice_proto::agent::v1::agent_server::AgentServer::new(AgentGrpc { dispatcher });
    voice_runtime::serve(ctx, listeners, http::routes(token_service), Some(tonic::service::Routes::new(grpc))).await
}
