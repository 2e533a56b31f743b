//! Errors in OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`), for HTTP, and
//! their gRPC status equivalents. Every refusal a client can see goes through [`ApiError`].

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: invalid_request_error, server_error, rate_limit_error, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 401: no or a wrong API key (the key itself is never echoed).
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "missing or incorrect API key: send `Authorization: Bearer <key>`")
            .with_code("invalid_api_key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn model_not_found(model: &str, available: &[String]) -> Self {
        Self::not_found(format!("The model `{model}` does not exist or is not served here. Available: {}", available.join(", ")))
            .with_param("model")
            .with_code("model_not_found")
    }

    /// 413: body, audio or text over a configured limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message).with_code("payload_too_large")
    }

    /// 415/400 family for media we cannot read.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", message).with_code("unsupported_media")
    }

    /// 429: this client is over its `--rate-limit`; a token is back after `retry_after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate limit exceeded for this client (--rate-limit); retry later")
            .with_code("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }

    /// 429: the queue is full; come back after `retry_after`.
    pub fn overloaded(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "The server is busy: the request queue is full. Retry after the time in the Retry-After header.",
        )
        .with_code("queue_full");
        e.retry_after = Some(retry_after);
        e
    }

    /// 503: not ready (model loading) or shutting down.
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code("unavailable");
        e.retry_after = Some(retry_after);
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message).with_code("timeout")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorDetail { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code },
        })
        .unwrap_or_else(|_| "{\"error\":{\"message\":\"error\"}}".into())
    }

    /// The same refusal as a gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.status.as_u16() {
            400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            408 | 504 => tonic::Code::DeadlineExceeded,
            429 => tonic::Code::ResourceExhausted,
            503 => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, self.message.clone());
        if let Some(ra) = self.retry_after {
            if let Ok(v) = (ra.as_secs_f64().ceil().max(1.0) as u64).to_string().parse() {
                status.metadata_mut().insert("retry-after", v);
            }
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_json();
        let mut resp = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(ra) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&(ra.as_secs_f64().ceil().max(1.0) as u64).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

/// JSON helper for handlers.
pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// A request's optional `model` must name the one model this service serves (empty = any).
pub fn check_model(served: &str, requested: Option<&str>) -> Result<(), ApiError> {
    check_model_or_alias(served, &[], requested)
}

/// [`check_model`], also accepting `aliases`: the OpenAI model names clients send by default
/// (`whisper-1`, `tts-1`, ...), which mean "the served model".
pub fn check_model_or_alias(served: &str, aliases: &[&str], requested: Option<&str>) -> Result<(), ApiError> {
    match requested.map(str::trim) {
        None | Some("") => Ok(()),
        Some(m) if m == served || aliases.contains(&m) => Ok(()),
        Some(m) => Err(ApiError::model_not_found(m, &std::iter::once(served).chain(aliases.iter().copied()).map(String::from).collect::<Vec<_>>())),
    }
}

/// Parse a JSON request body, turning every problem into a 400 in OpenAI's shape (invalid UTF-8
/// and unknown or missing fields named in `param`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("the request body is not valid UTF-8").with_code("invalid_encoding"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let param = msg.split('`').nth(1).map(str::to_string);
        let err = ApiError::bad_request(format!("invalid request body: {msg}")).with_code("invalid_request_body");
        match param {
            Some(p) if msg.contains("missing field") || msg.contains("unknown") => err.with_param(p),
            _ => err,
        }
    })
}
