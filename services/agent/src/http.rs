//! HTTP: `POST /api/token` (a LiveKit token for the browser; sends the agent to the room),
//! `GET /v1/conversations`, and the web frontend's files.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use voice_runtime::ApiError;

use crate::{
    dispatch::Dispatcher,
    token::{mint, random_name, valid_name, LiveKitKeys},
};

#[derive(Clone)]
pub struct TokenService {
    pub keys: LiveKitKeys,
    /// The LiveKit URL browsers connect to.
    pub public_url: String,
    pub ttl: Duration,
    /// Set once the VAD model and the LiveKit core are loaded; until then the endpoint says 503.
    pub dispatcher: Arc<OnceLock<Arc<Dispatcher>>>,
}

impl TokenService {
    fn dispatcher(&self) -> Result<&Arc<Dispatcher>, ApiError> {
        self.dispatcher.get().ok_or_else(|| ApiError::unavailable("the agent is still loading", Duration::from_secs(2)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    room: Option<String>,
    identity: Option<String>,
    name: Option<String>,
}

async fn token(State(s): State<TokenService>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) { TokenRequest::default() } else { voice_runtime::error::parse_json(&body)? };
    let room = req.room.unwrap_or_else(|| random_name("voice"));
    let identity = req.identity.unwrap_or_else(|| random_name("user"));
    for (what, v) in [("room", &room), ("identity", &identity)] {
        if !valid_name(v) {
            return Err(ApiError::bad_request(format!("`{what}` must be 1-64 characters of letters, digits, '-', '_' or '.'")).with_param(what));
        }
    }
    if identity.starts_with("agent") {
        return Err(ApiError::bad_request("identities starting with `agent` are the agent's").with_param("identity"));
    }
    let name = req.name.filter(|n| !n.trim().is_empty() && n.len() <= 64).unwrap_or_else(|| identity.clone());
    let jwt = mint(&s.keys, &room, &identity, &name, s.ttl).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let joined = match s.dispatcher()?.dispatch(&room) {
        Ok(d) => d == crate::dispatch::Dispatched::Joined,
        Err(max) => return Err(ApiError::unavailable(format!("the agent is already in {max} rooms; try again later"), Duration::from_secs(10))),
    };
    tracing::info!(room = %room, identity = %identity, agent_joining = joined, "issued a room token");
    Ok(Json(json!({"url": s.public_url, "token": jwt, "room": room, "identity": identity})))
}

async fn conversations(State(s): State<TokenService>) -> Json<Value> {
    let list: Vec<Value> = s
        .dispatcher
        .get()
        .map(|d| d.conversations())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "room": c.room,
                "state": *c.state.lock().unwrap(),
                "turns": c.turns.load(std::sync::atomic::Ordering::Relaxed),
                "age_seconds": c.started.elapsed().as_secs_f64(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": list}))
}

/// The agent's API (under the runtime's auth, limits and metrics).
pub fn routes(s: TokenService) -> Router {
    Router::new().route("/api/token", post(token)).route("/v1/conversations", get(conversations)).with_state(s)
}

/// The frontend's origin: its built files and the token endpoint, same origin so the browser
/// needs no CORS. Open to anyone who can reach it, like any page that hands out room tokens:
/// bind it to loopback or put it behind your ingress's auth.
pub fn frontend(s: TokenService, dir: Option<PathBuf>) -> Router {
    let api = Router::new().route("/api/token", post(token)).with_state(s).layer(axum::extract::DefaultBodyLimit::max(4096));
    match dir {
        Some(dir) => {
            let index = dir.join("index.html");
            api.fallback_service(tower_http::services::ServeDir::new(&dir).fallback(tower_http::services::ServeFile::new(index)))
        }
        None => api.fallback(|| async {
            (http::StatusCode::NOT_FOUND, "the frontend is not built: run `npm ci && npm run build` in frontend/, or pass --frontend-dir")
        }),
    }
}
