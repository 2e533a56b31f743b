//! The LLM engine as the service sees it: the textgen scheduler, prompt building (chat template,
//! tokenisation off the async threads), context checks, and the metrics it reports.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::{Histogram, IntCounter, IntGauge};
use voice_runtime::{ApiError, ServiceContext};
use voice_textgen::{engine::EngineObserver, ChatMessage, Engine, GenerateRequest, SamplingParams, SubmitError, Usage};

pub struct LlmMetrics {
    ttft: Histogram,
    itl: Histogram,
    prompt_tokens: IntCounter,
    generated_tokens: IntCounter,
    tokens_per_second: Histogram,
    active: IntGauge,
    cancellations: IntCounter,
    queue_depth: IntGauge,
    prompt_reused: IntCounter,
    prompt_prefilled: IntCounter,
    prefix_cache_tokens: IntGauge,
    prefix_cache_entries: IntGauge,
}

impl LlmMetrics {
    pub fn new(ctx: &ServiceContext) -> prometheus::Result<Self> {
        let m = &ctx.metrics;
        let active = IntGauge::with_opts(prometheus::Opts::new("active_sequences", "Sequences being generated now").namespace(m.namespace()))?;
        m.registry.register(Box::new(active.clone()))?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::with_opts(prometheus::Opts::new(name, help).namespace(m.namespace()))?;
            m.registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let prefix_cache_tokens = gauge("prefix_cache_tokens", "Tokens of K/V held by the prefix cache")?;
        let prefix_cache_entries = gauge("prefix_cache_entries", "Sequences held by the prefix cache")?;
        Ok(Self {
            ttft: m.new_histogram(
                "time_to_first_token_seconds",
                "From request admission to the first generated token",
                voice_runtime::metrics::LATENCY_BUCKETS,
            )?,
            itl: m.new_histogram(
                "inter_token_latency_seconds",
                "Time between two generated tokens of one sequence",
                &[0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            )?,
            prompt_tokens: m.new_counter("prompt_tokens_total", "Prompt tokens processed")?,
            generated_tokens: m.new_counter("generated_tokens_total", "Tokens generated")?,
            tokens_per_second: m.new_histogram(
                "decode_tokens_per_second",
                "Decode speed of each finished generation",
                &[5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            )?,
            active,
            cancellations: m.new_counter("cancellations_total", "Generations stopped because the client went away")?,
            queue_depth: m.queue_depth.clone(),
            prompt_reused: m.new_counter("prompt_tokens_reused_total", "Prompt tokens whose K/V came from the prefix cache")?,
            prompt_prefilled: m.new_counter("prompt_tokens_prefilled_total", "Prompt tokens computed (not found in the prefix cache)")?,
            prefix_cache_tokens,
            prefix_cache_entries,
        })
    }
}

impl EngineObserver for LlmMetrics {
    fn first_token(&self, ttft: Duration) {
        self.ttft.observe(ttft.as_secs_f64());
    }
    fn token(&self, since_previous: Duration) {
        self.itl.observe(since_previous.as_secs_f64());
    }
    fn finished(&self, usage: Usage, decode_secs: f64) {
        self.prompt_tokens.inc_by(usage.prompt_tokens as u64);
        self.generated_tokens.inc_by(usage.completion_tokens as u64);
        if decode_secs > 0.0 && usage.completion_tokens > 1 {
            self.tokens_per_second.observe((usage.completion_tokens - 1) as f64 / decode_secs);
        }
    }
    fn cancelled(&self) {
        self.cancellations.inc();
    }
    fn active(&self, n: usize) {
        self.active.set(n as i64);
    }
    fn queued(&self, n: usize) {
        self.queue_depth.set(n as i64);
    }
    fn prompt(&self, reused: usize, prefilled: usize) {
        self.prompt_reused.inc_by(reused as u64);
        self.prompt_prefilled.inc_by(prefilled as u64);
    }
    fn prefix_cache(&self, tokens: usize, entries: usize) {
        self.prefix_cache_tokens.set(tokens as i64);
        self.prefix_cache_entries.set(entries as i64);
    }
}

pub struct LlmEngine {
    pub model_id: String,
    pub engine: Engine,
    pub default_max_tokens: usize,
    /// Put first in chat requests that have no system message (`--default-system-prompt`).
    pub default_system_prompt: Option<String>,
    pub loaded_at: Instant,
}

/// What to generate from.
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    /// Messages without the generation prompt: the start of a later chat prompt.
    ChatPrefix(Vec<ChatMessage>),
    Text(String),
}

impl LlmEngine {
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        voice_runtime::error::check_model(&self.model_id, requested)
    }

    pub fn context_length(&self) -> usize {
        self.engine.model.info.context_length
    }

    /// Render and tokenise on a blocking thread (a 1 MB prompt takes a moment).
    pub async fn prompt_tokens(self: &Arc<Self>, prompt: Prompt) -> Result<Vec<u32>, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let m = &me.engine.model;
            let text = match prompt {
                Prompt::Chat(msgs) => m
                    .chat
                    .render(&msgs, &m.tokenizer.bos_text, &m.tokenizer.eos_text)
                    .map_err(|e| ApiError::bad_request(format!("{e:#}")).with_param("messages"))?,
                Prompt::ChatPrefix(msgs) => m
                    .chat
                    .render_with(&msgs, &m.tokenizer.bos_text, &m.tokenizer.eos_text, false)
                    .map_err(|e| ApiError::bad_request(format!("{e:#}")).with_param("messages"))?,
                Prompt::Text(t) => t,
            };
            m.tokenizer.encode_prompt(&text).map_err(|e| ApiError::internal(format!("{e:#}")))
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenising failed: {e}")))?
    }

    /// Submit a generation. `explicit_max` says whether the client set max_tokens (then it must
    /// fit), or the default applies (then it shrinks to the room the prompt leaves).
    pub fn submit(&self, prompt_tokens: Vec<u32>, mut params: SamplingParams, explicit_max: bool) -> Result<voice_textgen::engine::Handle, ApiError> {
        let ctx = self.context_length();
        if !explicit_max {
            params.max_tokens = params.max_tokens.min(ctx.saturating_sub(prompt_tokens.len())).max(1);
        }
        self.engine.submit(GenerateRequest { prompt_tokens, params }).map_err(submit_error)
    }

    /// Read a prompt into the prefix cache (see `prefill_only` in llm.proto).
    pub fn prefill(&self, prompt_tokens: Vec<u32>) -> Result<voice_textgen::engine::Handle, ApiError> {
        self.engine.prefill(prompt_tokens).map_err(submit_error)
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull => ApiError::overloaded(Duration::from_secs(2)),
        SubmitError::ContextTooLong { .. } => ApiError::bad_request(e.to_string()).with_param("messages").with_code("context_length_exceeded"),
        SubmitError::EmptyPrompt => ApiError::bad_request(e.to_string()).with_param("prompt"),
        SubmitError::Stopped => ApiError::unavailable("the generation engine has stopped", Duration::from_secs(5)),
    }
}
