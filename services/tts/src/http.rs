//! HTTP API.
//!
//! OpenAI-compatible:
//! - `POST /v1/audio/speech` `{model, input, voice, response_format, speed}`: the body is
//!   streamed, the first sentence's audio leaving as soon as it is synthesized;
//!   `response_format` wav (default here; 16-bit, sizes 0xFFFFFFFF because the length is not
//!   known when the header leaves) or pcm (raw s16le, 24 kHz mono). mp3, opus, aac and flac are
//!   refused with 400 (no encoder in this build).
//! - `GET /v1/models`, `GET /v1/models/{id}`
//!
//! This service's own: `GET /v1/audio/voices` (ids, language, gender, default).

use std::time::Instant;

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use voice_kokoro::SAMPLE_RATE;
use voice_runtime::{error::parse_json, ApiError};

use crate::{
    engine::{streaming_wav_header, voice_language, TtsEngine},
    AppState,
};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/audio/speech", post(speech))
        .route("/v1/audio/voices", get(list_voices))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeechRequest {
    #[serde(default)]
    model: Option<String>,
    input: Option<String>,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    speed: Option<f32>,
    /// OpenAI: "audio" (the default, raw bytes) or "sse" (not supported here).
    #[serde(default)]
    stream_format: Option<String>,
    /// OpenAI's style prompt for gpt-4o-mini-tts: accepted and ignored (Kokoro has no such input).
    #[serde(default)]
    instructions: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Wav,
    Pcm,
}

fn parse_format(f: Option<&str>) -> Result<Format, ApiError> {
    match f.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("wav") => Ok(Format::Wav),
        Some("pcm") => Ok(Format::Pcm),
        Some(other @ ("mp3" | "opus" | "aac" | "flac")) => {
            Err(ApiError::bad_request(format!("response_format `{other}` is not available in this build (no encoder): use wav or pcm"))
                .with_param("response_format"))
        }
        Some(other) => Err(ApiError::bad_request(format!("unknown response_format `{other}`: use wav or pcm")).with_param("response_format")),
    }
}

async fn speech(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let engine = st.engine()?;
    let req: SpeechRequest = parse_json(&body)?;
    let _ = req.instructions;
    engine.check_model(req.model.as_deref())?;
    let format = parse_format(req.response_format.as_deref())?;
    if let Some(sf) = req.stream_format.as_deref() {
        if sf != "audio" {
            return Err(ApiError::bad_request(format!("stream_format `{sf}` is not supported: use audio")).with_param("stream_format"));
        }
    }
    let Some(input) = req.input else {
        return Err(ApiError::bad_request("`input` is required").with_param("input"));
    };
    let plan_engine = engine.clone();
    let plan = tokio::task::spawn_blocking(move || plan_engine.plan(&input, req.voice.as_deref(), req.speed))
        .await
        .map_err(|e| ApiError::internal(format!("text front end task failed: {e}")))??;

    let (tx, mut rx) = mpsc::channel(4);
    engine.synthesize(plan, started, tx).await?;
    // The first piece decides the status: an error before any audio is a proper HTTP error.
    let first = match rx.recv().await {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(e),
        None => return Err(ApiError::internal("synthesis ended without audio")),
    };
    let ttfa_ms = first.time_to_first_audio.map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0);
    let mut head = Vec::new();
    if format == Format::Wav {
        head.extend(streaming_wav_header(SAMPLE_RATE));
    }
    head.extend(voice_runtime::audio::f32_to_s16le(&first.samples));
    let stream = async_stream(head, rx);
    let content_type = if format == Format::Wav { "audio/wav" } else { "audio/pcm" };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::HeaderName::from_static("x-sample-rate"), SAMPLE_RATE.to_string()),
            (header::HeaderName::from_static("x-time-to-first-audio-ms"), format!("{ttfa_ms:.1}")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The response body: the first piece, then each piece as it arrives. An error after the first
/// piece ends the body early (the status has left already); it is logged by the engine.
fn async_stream(
    head: Vec<u8>,
    rx: mpsc::Receiver<Result<crate::engine::AudioPiece, ApiError>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    use futures::StreamExt;
    let first = futures::stream::once(async move { Ok(Bytes::from(head)) });
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
        Ok(p) => Ok(Bytes::from(voice_runtime::audio::f32_to_s16le(&p.samples))),
        Err(e) => Err(std::io::Error::other(e.message)),
    });
    first.chain(rest)
}

fn voices_json(e: &TtsEngine) -> Value {
    let voices: Vec<Value> = e
        .voices
        .ids()
        .map(|id| {
            let gender = match id.chars().nth(1) {
                Some('f') => "female",
                Some('m') => "male",
                _ => "unknown",
            };
            json!({"id": id, "language": voice_language(id), "gender": gender})
        })
        .collect();
    // OpenAI's names and the Kokoro voice each one speaks with (README, "voice-tts API").
    let aliases: serde_json::Map<String, Value> = crate::voice_names::OPENAI_VOICES.iter().map(|(name, id)| (name.to_string(), json!(id))).collect();
    json!({"object": "list", "default_voice": e.default_voice, "voices": voices, "openai_voices": aliases})
}

async fn list_voices(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let e = st.engine()?;
    Ok(Json(voices_json(&e)))
}

fn model_json(e: &TtsEngine) -> Value {
    json!({"id": e.model_id, "object": "model", "owned_by": "voice-ai", "sample_rate": SAMPLE_RATE, "voices": e.voices.len()})
}

async fn list_models(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let e = st.engine()?;
    Ok(Json(json!({"object": "list", "data": [model_json(&e)]})))
}

async fn get_model(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let e = st.engine()?;
    e.check_model(Some(&id))?;
    Ok(Json(model_json(&e)))
}
