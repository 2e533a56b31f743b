//! OpenAI-compatible HTTP API:
//! - `POST /v1/chat/completions` (stream: SSE chunks ending with `data: [DONE]`; usage in a last
//!   chunk when `stream_options.include_usage`)
//! - `POST /v1/completions`
//! - `GET /v1/models`, `GET /v1/models/{id}`

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures::{stream, Stream, StreamExt};
use serde_json::{json, Value};
use voice_runtime::ApiError;
use voice_textgen::{engine::Handle, Event, Usage};

use crate::{
    engine::{LlmEngine, Prompt},
    request::{chat_messages, parse_json, sampling_params, ChatRequest, CompletionRequest, PromptField},
    AppState,
};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .with_state(state)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{:x}{:06x}{:04x}", now_secs(), nanos & 0xff_ffff, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        // OpenAI's name for prompt tokens served from the prompt (prefix) cache.
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Which response shape to produce.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    include_usage: bool,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]})
    }
}

async fn chat(State(st): State<AppState>, body: Bytes) -> Response {
    chat_inner(st, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(st): State<AppState>, body: Bytes) -> Response {
    completions_inner(st, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(st: AppState, body: Bytes) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let req: ChatRequest = parse_json(&body)?;
    engine.check_model(req.model.as_deref())?;
    let explicit = req.sampling.max_tokens.is_some() || req.sampling.max_completion_tokens.is_some();
    let params = sampling_params(&req.sampling, engine.default_max_tokens)?;
    let messages = chat_messages(&req.messages, engine.default_system_prompt.as_deref())?;
    let tokens = engine.prompt_tokens(Prompt::Chat(messages)).await?;
    let handle = engine.submit(tokens, params, explicit)?;
    let meta = Meta {
        id: new_id("chatcmpl"),
        created: now_secs(),
        model: engine.model_id.clone(),
        kind: Kind::Chat,
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    };
    respond(handle, meta, req.stream.unwrap_or(false), String::new()).await
}

async fn completions_inner(st: AppState, body: Bytes) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let req: CompletionRequest = parse_json(&body)?;
    engine.check_model(req.model.as_deref())?;
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(v) if v.len() == 1 => v.into_iter().next().unwrap_or_default(),
        PromptField::Many(_) => return Err(ApiError::bad_request("only one prompt per request is supported").with_param("prompt")),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("prompt must not be empty").with_param("prompt"));
    }
    let explicit = req.sampling.max_tokens.is_some() || req.sampling.max_completion_tokens.is_some();
    // OpenAI's default for text completions is 16 tokens.
    let params = sampling_params(&req.sampling, 16)?;
    let echo = if req.echo.unwrap_or(false) { prompt.clone() } else { String::new() };
    let tokens = engine.prompt_tokens(Prompt::Text(prompt)).await?;
    let handle = engine.submit(tokens, params, explicit)?;
    let meta = Meta {
        id: new_id("cmpl"),
        created: now_secs(),
        model: engine.model_id.clone(),
        kind: Kind::Text,
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    };
    respond(handle, meta, req.stream.unwrap_or(false), echo).await
}

async fn respond(mut handle: Handle, meta: Meta, stream: bool, echo: String) -> Result<Response, ApiError> {
    if stream {
        return Ok(Sse::new(sse_stream(handle, meta, echo)).keep_alive(KeepAlive::default()).into_response());
    }
    // Not streaming: collect. Dropping this future (client gone) drops the handle: cancelled.
    let mut text = echo;
    loop {
        match handle.events.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { reason, usage, .. }) => {
                let reason = serde_json::to_value(reason).unwrap_or(json!("stop"));
                let choice = match meta.kind {
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason})
                    }
                    Kind::Text => {
                        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
                    }
                };
                return Ok(Json(json!({
                    "id": meta.id, "object": meta.object(false), "created": meta.created, "model": meta.model,
                    "choices": [choice], "usage": usage_json(&usage),
                }))
                .into_response());
            }
            Some(Event::Error(e)) => return Err(ApiError::internal(format!("generation failed: {e}"))),
            None => return Err(ApiError::internal("the generation ended without a result")),
        }
    }
}

enum Phase {
    Start,
    Running,
    Finished,
}

/// SSE chunks: the role (chat), each text delta, the finish reason, usage if asked, `[DONE]`.
fn sse_stream(handle: Handle, meta: Meta, echo: String) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let meta = Arc::new(meta);
    stream::unfold((handle, Phase::Start, meta, echo), |(mut handle, phase, meta, echo)| async move {
        let ev = |v: Value| SseEvent::default().data(v.to_string());
        match phase {
            Phase::Start => {
                let first = match meta.kind {
                    Kind::Chat => meta.chunk(if echo.is_empty() { Some("") } else { Some(&echo) }, true, None),
                    Kind::Text => meta.chunk(Some(&echo), false, None),
                };
                Some((vec![ev(first)], (handle, Phase::Running, meta, String::new())))
            }
            Phase::Running => match handle.events.recv().await {
                Some(Event::Text(t)) => Some((vec![ev(meta.chunk(Some(&t), false, None))], (handle, Phase::Running, meta, echo))),
                Some(Event::Done { reason, usage, .. }) => {
                    let reason = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_else(|| "stop".into());
                    let mut out = vec![ev(meta.chunk(None, false, Some(&reason)))];
                    if meta.include_usage {
                        out.push(ev(json!({
                            "id": meta.id, "object": meta.object(true), "created": meta.created, "model": meta.model,
                            "choices": [], "usage": usage_json(&usage),
                        })));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    Some((out, (handle, Phase::Finished, meta, echo)))
                }
                Some(Event::Error(e)) => {
                    let err = ApiError::internal(format!("generation failed: {e}"));
                    let out = vec![SseEvent::default().data(err.to_json()), SseEvent::default().data("[DONE]")];
                    Some((out, (handle, Phase::Finished, meta, echo)))
                }
                None => None,
            },
            Phase::Finished => None,
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)))
}

fn model_json(e: &LlmEngine) -> Value {
    let info = &e.engine.model.info;
    json!({"id": e.model_id, "object": "model", "created": now_secs() - e.loaded_at.elapsed().as_secs(), "owned_by": "voice-ai",
           "architecture": info.architecture, "context_length": info.context_length})
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
