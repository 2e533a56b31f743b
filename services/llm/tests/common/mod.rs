//! Test helpers for `voice-llm`: the binary under the shared harness (voice-testkit), chat and
//! completion requests, and an SSE reader.
#![allow(dead_code, unused_imports)]

use serde_json::{json, Value};
pub use voice_testkit::{assert_error, client, metric, post_body, raw_request, reply, Reply, Server, SharedServer};

static LLM: voice_testkit::Service = voice_testkit::Service::new(env!("CARGO_BIN_EXE_voice-llm"), "VOICE_LLM");

pub const MODEL: &str = "smollm2-135m-instruct";

/// Start a `voice-llm` of its own for this test.
pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    LLM.start(args, envs)
}

/// The `voice-llm` shared by this test binary's tests.
pub fn shared(args: &'static [&'static str]) -> &'static SharedServer {
    LLM.shared(args)
}

/// The documented reference prompt for the France question: ChatML with no system message
/// (the model's own template adds SmolLM's default system prompt; see README).
pub fn plain_chatml(q: &str) -> String {
    format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
}

pub fn post_json(base: &str, path: &str, body: &Value) -> Reply {
    post_body(&format!("{base}{path}"), "application/json", body.to_string())
}

pub fn ok_json(r: &Reply) -> Value {
    assert_eq!(r.0, 200, "status {} body {}", r.0, r.2);
    serde_json::from_str(&r.2).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.2))
}

/// Greedy chat request body.
pub fn chat_body(q: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "temperature": 0, "stream": stream})
}

/// An SSE response body split into its `data:` payloads; asserts the framing (every event a
/// `data:` line, the last one `[DONE]`), returns the JSON chunks before it.
pub fn sse_chunks(body: &str) -> Vec<Value> {
    let events: Vec<&str> = body.split("\n\n").map(str::trim).filter(|e| !e.is_empty() && !e.starts_with(':')).collect();
    assert!(!events.is_empty(), "empty SSE body");
    for e in &events {
        assert!(e.starts_with("data: "), "not an SSE data event: {e:?}");
    }
    assert_eq!(*events.last().unwrap(), "data: [DONE]", "the stream must end with [DONE]: {body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e["data: ".len()..]).unwrap_or_else(|err| panic!("chunk is not JSON ({err}): {e}")))
        .collect()
}

/// The text of streamed chat chunks, concatenated.
pub fn chat_stream_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(String::from)).collect()
}
