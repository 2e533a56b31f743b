//! The gRPC contract `voice.llm.v1.TextGeneration` through a real tonic client: streamed text
//! deltas ending with one `done` message (finish reason, token counts), the same text as the
//! HTTP API for the same greedy request, contract errors as statuses, cancellation by dropping
//! the stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_stream::StreamExt;
use voice_proto::llm::v1::{self as pb, text_generation_client::TextGenerationClient};

const ARGS: &[&str] = &["--model", MODEL, "--max-batch", "4", "--context-length", "2048"];

/// Blocking HTTP helpers (reqwest::blocking) must not run on the async runtime's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn cancellations() -> f64 {
    blocking(|| metric(&shared(ARGS).http, "voice_llm_cancellations_total", "")).await
}

async fn client() -> TextGenerationClient<tonic::transport::Channel> {
    TextGenerationClient::connect(shared(ARGS).grpc.clone()).await.unwrap()
}

fn question(q: &str, max_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: MODEL.into(),
        messages: vec![pb::ChatMessage { role: "user".into(), content: q.into() }],
        max_tokens,
        ..Default::default()
    }
}

/// (deltas, final message)
async fn collect(c: &mut TextGenerationClient<tonic::transport::Channel>, req: pb::GenerateRequest) -> (Vec<String>, pb::GenerateResponse) {
    let mut s = c.generate(req).await.unwrap().into_inner();
    let mut deltas = vec![];
    while let Some(m) = s.next().await {
        let m = m.unwrap();
        if m.done {
            assert!(s.next().await.is_none(), "nothing after done");
            return (deltas, m);
        }
        deltas.push(m.text);
    }
    panic!("stream ended without a done message");
}

#[tokio::test]
async fn generate_streams_deltas_like_http() {
    let mut c = client().await;
    let (deltas, last) = collect(
        &mut c,
        pb::GenerateRequest { prompt: plain_chatml("What is the capital of France?"), max_tokens: 30, ..question("", 0) }.without_messages(),
    )
    .await;
    let text: String = deltas.concat();
    assert!(text.contains("Paris"), "{text}");
    assert!(deltas.len() > 3);
    assert_eq!(last.finish_reason, "stop");
    assert!(last.prompt_tokens > 5 && last.completion_tokens > 3);
    assert!(last.time_to_first_token_ms > 0.0);

    // The chat form renders the model's template: same text as the HTTP chat route, greedy.
    let (deltas, _) = collect(&mut c, question("Name three colors.", 20)).await;
    let http = blocking(|| ok_json(&post_json(&shared(ARGS).http, "/v1/chat/completions", &chat_body("Name three colors.", 20, false)))).await;
    assert_eq!(deltas.concat(), http["choices"][0]["message"]["content"].as_str().unwrap());

    let (_, last) = collect(&mut c, question("Count to one hundred.", 5)).await;
    assert_eq!((last.finish_reason.as_str(), last.completion_tokens), ("length", 5));

    let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner();
    assert_eq!(models.models[0].id, MODEL);
    assert_eq!(models.models[0].architecture, "llama");
    assert_eq!(models.models[0].device, "cpu");
}

#[tokio::test]
async fn contract_errors_are_statuses() {
    let mut c = client().await;
    let cases = [
        (pb::GenerateRequest { model: MODEL.into(), ..Default::default() }, tonic::Code::InvalidArgument, "messages or a prompt"),
        (pb::GenerateRequest { model: "gpt-5".into(), ..question("hi", 4) }, tonic::Code::NotFound, "gpt-5"),
        (pb::GenerateRequest { temperature: 9.0, ..question("hi", 4) }, tonic::Code::InvalidArgument, "temperature"),
        (
            pb::GenerateRequest { messages: vec![pb::ChatMessage { role: "wizard".into(), content: "hi".into() }], ..question("", 4) },
            tonic::Code::InvalidArgument,
            "wizard",
        ),
        (question("hi", 1_000_000), tonic::Code::InvalidArgument, "context"),
    ];
    for (req, code, needle) in cases {
        let err = c.generate(req).await.expect_err("an error status");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle), "{:?} lacks {needle:?}", err.message());
    }
}

#[tokio::test]
async fn dropping_the_stream_cancels_generation() {
    let mut c = client().await;
    let before = cancellations().await;
    let mut s = c
        .generate(pb::GenerateRequest { temperature: 0.8, seed: Some(1), ..question("Tell me a very long story.", 1500) })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        s.next().await.unwrap().unwrap();
    }
    drop(s);
    let t = Instant::now();
    while cancellations().await < before + 1.0 {
        assert!(t.elapsed() < Duration::from_secs(20), "cancellation not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

trait WithoutMessages {
    fn without_messages(self) -> Self;
}

impl WithoutMessages for pb::GenerateRequest {
    fn without_messages(mut self) -> Self {
        self.messages.clear();
        self
    }
}
