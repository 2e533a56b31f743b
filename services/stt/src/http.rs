//! OpenAI-compatible HTTP API:
//! - `POST /v1/audio/transcriptions` (multipart: file, model, language, prompt, response_format,
//!   temperature, timestamp_granularities[])
//! - `POST /v1/audio/translations` (same fields; English output from multilingual models)
//! - `GET /v1/models`, `GET /v1/models/{id}`

use std::sync::Arc;

use axum::{
    extract::{multipart::MultipartError, Multipart, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde_json::json;
use voice_runtime::{audio, ApiError};
use voice_whisper::{Task, TranscribeOptions};

use crate::{formats::ResponseFormat, AppState};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .with_state(state)
}

#[derive(Default)]
struct Form {
    file: Option<Bytes>,
    model: String,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
}

fn multipart_error(e: MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("the upload exceeds the limit of {limit} bytes (--max-body-bytes)"))
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

async fn read_form(mut mp: Multipart, limit: u64) -> Result<Form, ApiError> {
    let mut f = Form::default();
    while let Some(field) = mp.next_field().await.map_err(|e| multipart_error(e, limit))? {
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
        let text = || -> Result<String, ApiError> {
            String::from_utf8(data.to_vec())
                .map(|s| s.trim().to_string())
                .map_err(|_| ApiError::bad_request(format!("field `{name}` is not UTF-8 text")).with_param(name.clone()))
        };
        match name.as_str() {
            "file" => f.file = Some(data.clone()),
            "model" => f.model = text()?,
            "language" => f.language = Some(text()?).filter(|s| !s.is_empty()),
            "prompt" => f.prompt = Some(text()?).filter(|s| !s.is_empty()),
            "response_format" => f.response_format = Some(text()?),
            "temperature" => f.temperature = Some(text()?),
            "timestamp_granularities[]" | "timestamp_granularities" => f.granularities.push(text()?),
            other => tracing::debug!(field = other, "ignoring unknown multipart field"),
        }
    }
    Ok(f)
}

async fn transcriptions(State(st): State<AppState>, mp: Multipart) -> Response {
    handle(st, mp, Task::Transcribe).await.unwrap_or_else(IntoResponse::into_response)
}

async fn translations(State(st): State<AppState>, mp: Multipart) -> Response {
    handle(st, mp, Task::Translate).await.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(st: AppState, mp: Multipart, task: Task) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let limit = st.ctx.args.max_body_bytes;
    let form = read_form(mp, limit).await?;
    engine.check_model(&form.model)?;
    let format: ResponseFormat =
        form.response_format.as_deref().unwrap_or("json").parse().map_err(|e: String| ApiError::bad_request(e).with_param("response_format"))?;
    let temperature = match form.temperature.as_deref() {
        None | Some("") => 0.0,
        Some(t) => t
            .parse::<f32>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| ApiError::bad_request(format!("temperature `{t}` must be a number between 0 and 1")).with_param("temperature"))?,
    };
    for g in &form.granularities {
        if g != "segment" {
            return Err(
                ApiError::bad_request(format!("timestamp granularity `{g}` is not supported (segment is)")).with_param("timestamp_granularities[]")
            );
        }
    }
    engine.check_language(form.language.as_deref())?;
    if task == Task::Translate && !engine.multilingual {
        return Err(ApiError::bad_request(format!("model `{}` is English-only and cannot translate", engine.model_id)));
    }
    let file = form.file.ok_or_else(|| ApiError::bad_request("missing multipart field `file` (the audio)").with_param("file"))?;

    let max_secs = st.args.max_audio_seconds;
    let pcm = tokio::task::spawn_blocking(move || audio::decode_to_rate(&file, 16_000, max_secs))
        .await
        .map_err(|e| ApiError::internal(format!("audio decoding task failed: {e}")))?
        .map_err(|e| {
            let msg = format!("{e}");
            if e.http_status() == 413 {
                ApiError::too_large(format!("{msg} (--max-audio-seconds)")).with_param("file")
            } else {
                ApiError::bad_request(format!("could not read the audio file: {msg}")).with_param("file")
            }
        })?;

    let opts = TranscribeOptions { language: form.language, task, initial_prompt: form.prompt, temperature, ..Default::default() };
    let transcript = engine.transcribe(Arc::new(pcm.samples), opts).await?;
    let task_name = if task == Task::Translate { "translate" } else { "transcribe" };
    let body = format.render(&transcript, task_name);
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn model_json(id: &str, created: u64) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "voice-ai"})
}

async fn list_models(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = st.engine()?;
    Ok(Json(json!({
        "object": "list",
        "data": [model_json(&engine.model_id, st.started_unix), model_json("whisper-1", st.started_unix)],
    })))
}

async fn get_model(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = st.engine()?;
    engine.check_model(&id)?;
    Ok(Json(model_json(&id, st.started_unix)))
}
