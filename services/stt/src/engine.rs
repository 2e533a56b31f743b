//! The transcription engine behind both APIs: admission (bounded queue), the model slot with
//! its CPU fallback, cancellation when the caller goes away, and STT metrics.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use prometheus::{Histogram, IntCounter, IntGauge};
use voice_runtime::{ApiError, ModelSlot, ServiceContext, WorkQueue};
use voice_whisper::{Cancelled, TranscribeOptions, Transcript, UnknownLanguage, WhisperModel};

pub struct SttMetrics {
    pub audio_seconds: IntCounter,
    pub transcription_seconds: Histogram,
    pub realtime_factor: Histogram,
    pub streams_active: IntGauge,
    pub partials: IntCounter,
    pub finals: IntCounter,
    pub candidates_kept: IntCounter,
    pub windows_fitted: IntCounter,
    pub windows_full: IntCounter,
}

impl SttMetrics {
    pub fn new(ctx: &ServiceContext) -> prometheus::Result<Self> {
        let m = &ctx.metrics;
        Ok(Self {
            audio_seconds: m.new_counter("audio_seconds_total", "Seconds of audio transcribed")?,
            transcription_seconds: m.new_histogram(
                "transcription_seconds",
                "Model time per transcription (queue wait excluded)",
                voice_runtime::metrics::LATENCY_BUCKETS,
            )?,
            realtime_factor: m.new_histogram(
                "realtime_factor",
                "Processing time divided by audio duration",
                &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
            )?,
            streams_active: {
                let g = IntGauge::with_opts(prometheus::Opts::new("streams_active", "Open streaming recognitions").namespace(m.namespace()))?;
                m.registry.register(Box::new(g.clone()))?;
                g
            },
            partials: m.new_counter("streaming_partials_total", "Partial transcripts sent")?,
            finals: m.new_counter("streaming_finals_total", "Final transcripts sent on streams")?,
            candidates_kept: m.new_counter(
                "streaming_candidates_kept_total",
                "Finals that were the transcript started at FinalCandidate (made while the client waited out its end-of-turn silence)",
            )?,
            windows_fitted: m.new_counter(
                "encoder_windows_fitted_total",
                "Transcriptions made on an utterance-sized encoder window (--stream-window fit) and kept",
            )?,
            windows_full: m.new_counter(
                "encoder_windows_full_total",
                "Transcriptions made on Whisper's 30 s window (uploads, long audio, or a fitted window that fell back)",
            )?,
        })
    }
}

pub struct SttEngine {
    pub model_id: String,
    /// Language codes the model knows (only English for `.en` models).
    pub languages: Vec<&'static str>,
    pub multilingual: bool,
    pub slot: ModelSlot<WhisperModel>,
    pub queue: WorkQueue,
    pub metrics: SttMetrics,
}

/// Sets the cancel flag when dropped, so a request future that is dropped (client gone,
/// timeout) stops the decoder at its next step.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl SttEngine {
    /// `requested` must be our model; empty and `whisper-1` (OpenAI's name, which clients send
    /// by default) mean "the served model".
    pub fn check_model(&self, requested: &str) -> Result<(), ApiError> {
        voice_runtime::error::check_model_or_alias(&self.model_id, &["whisper-1"], Some(requested))
    }

    pub fn check_language(&self, language: Option<&str>) -> Result<(), ApiError> {
        let Some(code) = language else { return Ok(()) };
        if self.languages.iter().any(|c| c.eq_ignore_ascii_case(code)) {
            Ok(())
        } else if !self.multilingual {
            Err(ApiError::bad_request(format!("model `{}` is English-only; language `{code}` is not supported", self.model_id))
                .with_param("language"))
        } else {
            Err(ApiError::bad_request(format!("unknown language `{code}` (use an ISO-639-1 code such as en, de, fr)")).with_param("language"))
        }
    }

    /// Transcribe 16 kHz samples: wait for a model slot (or 429), run on a blocking thread,
    /// stop early if this future is dropped.
    pub async fn transcribe(self: &Arc<Self>, samples: Arc<Vec<f32>>, opts: TranscribeOptions) -> Result<Transcript, ApiError> {
        let permit = self.queue.acquire().await?;
        self.run_blocking(samples, opts, permit).await
    }

    /// Like [`transcribe`](Self::transcribe) but never waits: None when no slot is free now
    /// (used for streaming partials, which are worth skipping rather than queueing).
    pub async fn try_transcribe(self: &Arc<Self>, samples: Arc<Vec<f32>>, opts: TranscribeOptions) -> Option<Result<Transcript, ApiError>> {
        if self.queue.depth() > 0 {
            return None;
        }
        let permit = self.queue.acquire().await.ok()?;
        Some(self.run_blocking(samples, opts, permit).await)
    }

    async fn run_blocking(
        self: &Arc<Self>,
        samples: Arc<Vec<f32>>,
        opts: TranscribeOptions,
        permit: voice_runtime::queue::WorkPermit,
    ) -> Result<Transcript, ApiError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let engine = self.clone();
        let audio_secs = samples.len() as f64 / 16_000.0;
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let flag = cancel.clone();
            engine.slot.run(|m, _dev| m.transcribe(&samples, &opts, &|| flag.load(Ordering::Relaxed)))
        })
        .await
        .map_err(|e| ApiError::internal(format!("transcription task failed: {e}")))?;
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(t) => {
                if t.fitted_window() {
                    self.metrics.windows_fitted.inc();
                } else {
                    self.metrics.windows_full.inc();
                }
                self.metrics.audio_seconds.inc_by(audio_secs.round() as u64);
                self.metrics.transcription_seconds.observe(secs);
                if audio_secs > 0.0 {
                    self.metrics.realtime_factor.observe(secs / audio_secs);
                }
                self.queue.set_typical_duration(Duration::from_secs_f64(secs));
                Ok(t)
            }
            Err(e) if e.is::<Cancelled>() => Err(ApiError::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "server_error",
                "the transcription was cancelled (client gone or request timeout)",
            )),
            Err(e) if e.is::<UnknownLanguage>() => Err(ApiError::bad_request(e.to_string()).with_param("language")),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "transcription failed");
                Err(ApiError::internal(format!("transcription failed: {e:#}")))
            }
        }
    }
}
