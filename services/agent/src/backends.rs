//! gRPC clients of the four services, with the bearer key, per-call deadlines and retries.
//!
//! Channels connect lazily and reconnect by themselves, so a service that restarts is picked up
//! again on the next call; [`retry`] covers the calls that failed while it was away.

use std::{future::Future, time::Duration};

use anyhow::{Context, Result};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
    Code, Request, Status,
};
use voice_proto::{
    embed::v1::{embeddings_client::EmbeddingsClient, ContextRequest},
    llm::v1::{text_generation_client::TextGenerationClient, ChatMessage, GenerateRequest, GenerateResponse},
    stt::v1::speech_to_text_client::SpeechToTextClient,
    tts::v1::{text_to_speech_client::TextToSpeechClient, AudioChunk, SynthesizeRequest},
};

/// Adds `authorization: Bearer <key>` when the services require a key.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, BearerAuth>;

#[derive(Debug, Clone)]
pub struct BackendUrls {
    pub stt: String,
    pub llm: String,
    pub embed: String,
    pub tts: String,
}

/// How replies are generated: the knobs the agent passes to each service.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub llm_model: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: Option<u64>,
    pub voice: String,
    pub speed: f32,
    pub stt_model: String,
    pub language: String,
    pub partial_interval_ms: u32,
    /// RAG collection; empty = no retrieval.
    pub collection: String,
    pub context_tokens: u32,
    /// Deadline of one unary call (retrieval) and of opening a stream.
    pub call_timeout: Duration,
    /// Retries after the first attempt of a call that failed because a service was unreachable.
    pub retries: u32,
}

#[derive(Clone)]
pub struct Backends {
    pub stt: SpeechToTextClient<Authed>,
    pub llm: TextGenerationClient<Authed>,
    pub embed: EmbeddingsClient<Authed>,
    pub tts: TextToSpeechClient<Authed>,
    pub settings: ReplySettings,
}

/// A lazily connecting channel; `https://` URLs use TLS trusting `ca_pem` (the services'
/// `--tls-cert` or the CA that signed it).
fn channel(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string()).with_context(|| format!("bad backend URL {url}"))?;
    if url.starts_with("https://") {
        let ca = ca_pem.with_context(|| format!("backend {url} uses TLS: give the CA that signed its certificate with --backend-ca-file"))?;
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).with_context(|| format!("TLS settings for {url}"))?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

impl Backends {
    pub fn new(urls: &BackendUrls, api_key: Option<&str>, settings: ReplySettings) -> Result<Self> {
        Self::with_tls(urls, api_key, None, settings)
    }

    /// [`new`](Self::new), trusting `ca_pem` for `https://` backends.
    pub fn with_tls(urls: &BackendUrls, api_key: Option<&str>, ca_pem: Option<&[u8]>, settings: ReplySettings) -> Result<Self> {
        let auth = BearerAuth(match api_key {
            Some(k) => Some(format!("Bearer {k}").parse().context("the backend API key has characters a header cannot carry")?),
            None => None,
        });
        // Audio and answers are small; 16 MiB bounds a misbehaving server.
        let limit = 16 << 20;
        Ok(Self {
            stt: SpeechToTextClient::with_interceptor(channel(&urls.stt, ca_pem)?, auth.clone()).max_decoding_message_size(limit),
            llm: TextGenerationClient::with_interceptor(channel(&urls.llm, ca_pem)?, auth.clone()).max_decoding_message_size(limit),
            embed: EmbeddingsClient::with_interceptor(channel(&urls.embed, ca_pem)?, auth.clone()).max_decoding_message_size(limit),
            tts: TextToSpeechClient::with_interceptor(channel(&urls.tts, ca_pem)?, auth).max_decoding_message_size(limit),
            settings,
        })
    }

    /// Passages for `query` from the configured collection (None without one).
    pub async fn context(&self, query: &str) -> Result<Option<String>, Status> {
        let s = &self.settings;
        if s.collection.is_empty() {
            return Ok(None);
        }
        let resp = retry("voice-embed", s.retries, || {
            let mut c = self.embed.clone();
            let mut req = Request::new(ContextRequest {
                collection: s.collection.clone(),
                query: query.to_string(),
                max_tokens: s.context_tokens,
                top_k: 4,
                filter_json: String::new(),
            });
            req.set_timeout(s.call_timeout);
            async move { c.context(req).await }
        })
        .await?;
        let ctx = resp.into_inner().context;
        Ok((!ctx.trim().is_empty()).then_some(ctx))
    }

    pub async fn generate(&self, messages: Vec<ChatMessage>) -> Result<tonic::Streaming<GenerateResponse>, Status> {
        let s = &self.settings;
        retry("voice-llm", s.retries, || {
            let mut c = self.llm.clone();
            let req = GenerateRequest {
                model: s.llm_model.clone(),
                messages: messages.clone(),
                max_tokens: s.max_tokens,
                temperature: s.temperature,
                seed: s.seed,
                ..Default::default()
            };
            async move { c.generate(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Have voice-llm read `messages` into its prefix cache (`prefill_only`): what the next
    /// turn's prompt starts with. One try, no retries: a miss costs only that turn's prefill.
    /// max_tokens 1 bounds the work of a server that predates `prefill_only` (it would answer).
    pub async fn prefill(&self, messages: Vec<ChatMessage>) -> Result<(), Status> {
        let s = &self.settings;
        let mut c = self.llm.clone();
        let mut req = Request::new(GenerateRequest { model: s.llm_model.clone(), messages, max_tokens: 1, prefill_only: true, ..Default::default() });
        req.set_timeout(s.call_timeout);
        let mut stream = c.generate(req).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    }

    pub async fn synthesize(&self, text: &str) -> Result<tonic::Streaming<AudioChunk>, Status> {
        let s = &self.settings;
        retry("voice-tts", s.retries, || {
            let mut c = self.tts.clone();
            let req = SynthesizeRequest { text: text.to_string(), voice: s.voice.clone(), speed: s.speed, model: String::new() };
            async move { c.synthesize(req).await.map(|r| r.into_inner()) }
        })
        .await
    }
}

/// Whether a failure means "the service was not there" (worth retrying) rather than "it said no".
pub fn is_transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::ResourceExhausted | Code::Cancelled)
}

/// Run `call`, and again after 200 ms, 400 ms, ... (at most `retries` more times) while it
/// fails transiently.
pub async fn retry<T, F, Fut>(what: &str, retries: u32, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 0.. {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < retries && is_transient(&e) => {
                tracing::warn!(backend = what, attempt = attempt + 1, error = %e.message(), "backend call failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}
