//! OpenAI request bodies, validated into what the engine needs. Every problem is a 4xx in
//! OpenAI's error shape naming the offending parameter.

use serde::Deserialize;
use voice_runtime::ApiError;
use voice_textgen::{ChatMessage, SamplingParams};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentField {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentField>,
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The sampling fields shared by chat and text completions.
#[derive(Debug, Deserialize, Default)]
pub struct Sampling {
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub repeat_penalty: Option<f64>,
    #[serde(default)]
    pub n: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: PromptField,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Parse a JSON body: invalid UTF-8, invalid JSON and wrong field types are all 400s.
pub use voice_runtime::error::parse_json;

fn range(name: &'static str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || !x.is_finite() => {
            Err(ApiError::bad_request(format!("{name} must be between {lo} and {hi}, got {x}")).with_param(name))
        }
        other => Ok(other),
    }
}

/// Validate sampling fields. `max_tokens` is checked against the room the prompt leaves later.
pub fn sampling_params(s: &Sampling, default_max_tokens: usize) -> Result<SamplingParams, ApiError> {
    if let Some(n) = s.n {
        if n != 1 {
            return Err(ApiError::bad_request("only n = 1 is supported").with_param("n"));
        }
    }
    let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
        None => default_max_tokens,
        Some(m) if m < 1 => return Err(ApiError::bad_request(format!("max_tokens must be at least 1, got {m}")).with_param("max_tokens")),
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
    };
    let temperature = range("temperature", s.temperature, 0.0, 2.0)?.unwrap_or(1.0) as f32;
    let top_p = range("top_p", s.top_p, 0.0, 1.0)?.unwrap_or(1.0) as f32;
    if top_p == 0.0 {
        return Err(ApiError::bad_request("top_p must be greater than 0").with_param("top_p"));
    }
    let top_k = match s.top_k {
        Some(k) if k < 0 => return Err(ApiError::bad_request("top_k must not be negative").with_param("top_k")),
        Some(k) => k as usize,
        None => 0,
    };
    let seed = s.seed.map(|x| x as u64);
    let stop: Vec<String> = match &s.stop {
        None => vec![],
        Some(StopField::One(x)) => vec![x.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(|x| x.len() > 256) {
        return Err(ApiError::bad_request("stop takes at most 4 strings of at most 256 bytes").with_param("stop"));
    }
    Ok(SamplingParams {
        temperature,
        top_p,
        top_k,
        seed,
        frequency_penalty: range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0) as f32,
        presence_penalty: range("presence_penalty", s.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0) as f32,
        repeat_penalty: range("repeat_penalty", s.repeat_penalty, 0.01, 10.0)?.unwrap_or(1.0) as f32,
        repeat_last_n: 64,
        max_tokens,
        stop: stop.into_iter().filter(|x| !x.is_empty()).collect(),
    })
}

/// Chat messages with roles checked and content flattened to text; `default_system` goes first
/// when no message is a system (or developer) message.
pub fn chat_messages(msgs: &[InMessage], default_system: Option<&str>) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::bad_request("messages must contain at least one message").with_param("messages"));
    }
    let mut out = checked_messages(msgs)?;
    if let Some(system) = default_system.filter(|_| !out.iter().any(|m| m.role == "system")) {
        out.insert(0, ChatMessage { role: "system".into(), content: system.to_string() });
    }
    Ok(out)
}

fn checked_messages(msgs: &[InMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::bad_request(format!("messages[{i}].role `{other}` is not supported (system, developer, user, assistant)"))
                        .with_param(format!("messages[{i}].role")))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(ContentField::Text(t)) => t.clone(),
                Some(ContentField::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(ApiError::bad_request(format!("messages[{i}]: content part type `{}` is not supported (text)", p.kind))
                                .with_param(format!("messages[{i}].content")));
                        }
                        s.push_str(p.text.as_deref().unwrap_or(""));
                    }
                    s
                }
            };
            Ok(ChatMessage { role: role.to_string(), content })
        })
        .collect()
}
