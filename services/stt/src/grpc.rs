//! gRPC `voice.stt.v1.SpeechToText`: unary Transcribe, streaming recognition for the voice agent,
//! and ListModels.
//!
//! Streaming: audio is buffered per utterance at the client's rate and resampled to 16 kHz when a
//! transcript is made. While audio arrives, a partial transcript (no timestamps, greedy, no
//! fallback) is made every `partial_interval_ms` of new audio, at most one at a time, and only when
//! a model slot is free right now: partials are skipped under load, never queued. EndOfUtterance
//! (or the end of the stream, or an utterance reaching `--max-utterance-seconds`) produces the
//! final transcript with the full decoding.
//!
//! FinalCandidate (the client saw silence begin) starts that final transcript at once, on the
//! audio so far, and stops partials; an EndOfUtterance with `keep_candidate` (no speech came
//! after) sends it as the final as soon as it is done, so the client's end-of-turn silence and
//! the transcription overlap instead of adding up.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use voice_proto::stt::v1::{self as pb, speech_to_text_server::SpeechToText, streaming_recognize_request::Request as StreamReq};
use voice_runtime::{audio, ApiError};
use voice_whisper::{EncoderWindow, Task, TranscribeOptions};

use crate::{engine::SttEngine, AppState};

pub struct SttGrpc {
    pub state: AppState,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::StreamingRecognizeResponse, Status>> + Send>>;

fn to_pb(t: &voice_whisper::Transcript, model: &str, with_segments: bool) -> pb::TranscribeResponse {
    pb::TranscribeResponse {
        text: t.text.clone(),
        language: t.language.clone(),
        duration: t.duration,
        model: model.to_string(),
        segments: if with_segments {
            t.segments
                .iter()
                .map(|s| pb::Segment {
                    id: s.id as u32,
                    start: s.start,
                    end: s.end,
                    text: s.text.clone(),
                    avg_logprob: s.avg_logprob,
                    no_speech_prob: s.no_speech_prob,
                    compression_ratio: s.compression_ratio,
                    temperature: s.temperature,
                })
                .collect()
        } else {
            vec![]
        },
    }
}

#[tonic::async_trait]
impl SpeechToText for SttGrpc {
    async fn transcribe(&self, req: Request<pb::TranscribeRequest>) -> Result<Response<pb::TranscribeResponse>, Status> {
        let st = &self.state;
        let engine = st.engine()?;
        let r = req.into_inner();
        engine.check_model(&r.model)?;
        let language = Some(r.language.trim().to_string()).filter(|s| !s.is_empty());
        engine.check_language(language.as_deref())?;
        if !(0.0..=1.0).contains(&r.temperature) {
            return Err(ApiError::bad_request("temperature must be between 0 and 1").into());
        }
        let max_secs = st.args.max_audio_seconds;
        let bytes = r.audio;
        let pcm = tokio::task::spawn_blocking(move || audio::decode_to_rate(&bytes, 16_000, max_secs))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("could not read the audio: {e}")))?;
        let opts = TranscribeOptions {
            language,
            initial_prompt: Some(r.prompt).filter(|p| !p.trim().is_empty()),
            temperature: r.temperature,
            ..Default::default()
        };
        let t = engine.transcribe(Arc::new(pcm.samples), opts).await?;
        Ok(Response::new(to_pb(&t, &engine.model_id, r.timestamps)))
    }

    type StreamingRecognizeStream = ResponseStream;

    async fn streaming_recognize(
        &self,
        req: Request<Streaming<pb::StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        let engine = self.state.engine()?;
        let mut inbound = req.into_inner();
        // The first message must configure the stream.
        let first = inbound.next().await.ok_or_else(|| Status::invalid_argument("empty stream: send StreamingConfig first"))??;
        let config = match first.request {
            Some(StreamReq::Config(c)) => c,
            _ => return Err(Status::invalid_argument("the first message must be StreamingConfig")),
        };
        engine.check_model(&config.model)?;
        let language = Some(config.language.trim().to_string()).filter(|s| !s.is_empty());
        engine.check_language(language.as_deref())?;
        let rate = if config.sample_rate == 0 { 16_000 } else { config.sample_rate };
        if !(8_000..=48_000).contains(&rate) {
            return Err(Status::invalid_argument(format!("sample_rate {rate} is outside 8000..48000")));
        }
        let encoding = pb::AudioEncoding::try_from(config.encoding).unwrap_or(pb::AudioEncoding::PcmS16le);
        let session = Session {
            engine: engine.clone(),
            language,
            prompt: Some(config.prompt.clone()).filter(|p| !p.trim().is_empty()),
            rate,
            f32_input: encoding == pb::AudioEncoding::PcmF32le,
            interim: config.interim_results,
            partial_every: if config.partial_interval_ms == 0 { 1000 } else { config.partial_interval_ms.clamp(200, 10_000) } as usize
                * rate as usize
                / 1000,
            max_samples: (self.state.args.max_utterance_seconds * rate as f64) as usize,
            window: self.state.args.stream_window.encoder_window(),
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(session.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_models(&self, _req: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        let engine = self.state.engine()?;
        let device = self.state.ctx.device_state.status().device;
        Ok(Response::new(pb::ListModelsResponse { models: vec![pb::ModelInfo { id: engine.model_id.clone(), loaded: true, device }] }))
    }
}

struct Session {
    engine: Arc<SttEngine>,
    language: Option<String>,
    prompt: Option<String>,
    rate: u32,
    f32_input: bool,
    interim: bool,
    partial_every: usize,
    max_samples: usize,
    window: EncoderWindow,
}

type Tx = mpsc::Sender<Result<pb::StreamingRecognizeResponse, Status>>;

/// A final transcript started at a FinalCandidate, of the audio received until then.
struct Candidate {
    task: tokio::task::JoinHandle<Result<voice_whisper::Transcript, ApiError>>,
    started: Instant,
    audio_seconds: f64,
}

impl Session {
    fn opts(&self, partial: bool) -> TranscribeOptions {
        let fitted = matches!(self.window, EncoderWindow::Fit { .. });
        TranscribeOptions {
            language: self.language.clone(),
            task: Task::Transcribe,
            initial_prompt: self.prompt.clone(),
            // On a fitted window tiny.en loops far less with timestamps (it predicts where the
            // speech ends, then stops): measured 29 of 31 windows kept with, 27 without. On the
            // 30 s window a partial skips them (a few tokens less).
            timestamps: !partial || fitted,
            // Partials favour speed: one greedy pass, no fallback.
            compression_ratio_threshold: if partial { None } else { Some(2.4) },
            logprob_threshold: if partial { None } else { Some(-1.0) },
            window: self.window,
            ..Default::default()
        }
    }

    fn to_16k(&self, buf: &[f32]) -> Result<Vec<f32>, Status> {
        audio::resample(buf, self.rate, 16_000).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    async fn run(self, mut inbound: Streaming<pb::StreamingRecognizeRequest>, tx: Tx) {
        let metrics = &self.engine.metrics;
        metrics.streams_active.inc();
        let mut utterance = 0u32;
        let mut buf: Vec<f32> = Vec::new();
        let mut since_partial = 0usize;
        let mut partial: Option<tokio::task::JoinHandle<()>> = None;
        let mut candidate: Option<Candidate> = None;
        let stop = |partial: &mut Option<tokio::task::JoinHandle<()>>, candidate: &mut Option<Candidate>| {
            // Aborting drops the transcription's future, which sets its cancel flag: the model
            // stops within an encoder layer or a decoding step.
            if let Some(h) = partial.take() {
                h.abort();
            }
            if let Some(c) = candidate.take() {
                c.task.abort();
            }
        };
        loop {
            let msg = match inbound.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "stream closed by the client with an error");
                    break;
                }
                None => break,
            };
            match msg.request {
                Some(StreamReq::Audio(chunk)) => {
                    let samples = if self.f32_input { audio::f32le_to_f32(&chunk.pcm) } else { audio::s16le_to_f32(&chunk.pcm) };
                    since_partial += samples.len();
                    buf.extend_from_slice(&samples);
                    if buf.len() >= self.max_samples {
                        stop(&mut partial, &mut candidate);
                        if !self.final_transcript(&mut buf, utterance, &tx).await {
                            break;
                        }
                        utterance += 1;
                        since_partial = 0;
                    } else if self.interim
                        && candidate.is_none()
                        && since_partial >= self.partial_every
                        && partial.as_ref().is_none_or(|h| h.is_finished())
                    {
                        since_partial = 0;
                        let pcm = match self.to_16k(&buf) {
                            Ok(p) => Arc::new(p),
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                break;
                            }
                        };
                        let engine = self.engine.clone();
                        let opts = self.opts(true);
                        let tx2 = tx.clone();
                        let audio_seconds = pcm.len() as f64 / 16_000.0;
                        partial = Some(tokio::spawn(async move {
                            let start = Instant::now();
                            if let Some(Ok(t)) = engine.try_transcribe(pcm, opts).await {
                                engine.metrics.partials.inc();
                                let _ = tx2
                                    .send(Ok(pb::StreamingRecognizeResponse {
                                        utterance,
                                        text: t.text,
                                        is_final: false,
                                        audio_seconds,
                                        processing_ms: start.elapsed().as_secs_f64() * 1e3,
                                        language: t.language,
                                        window_seconds: t.window_seconds,
                                    }))
                                    .await;
                            }
                        }));
                    }
                }
                Some(StreamReq::FinalCandidate(_)) => {
                    stop(&mut partial, &mut candidate);
                    let pcm = match self.to_16k(&buf) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            break;
                        }
                    };
                    let engine = self.engine.clone();
                    let opts = self.opts(false);
                    let audio_seconds = pcm.len() as f64 / 16_000.0;
                    let task = tokio::spawn(async move { engine.transcribe(Arc::new(pcm), opts).await });
                    candidate = Some(Candidate { task, started: Instant::now(), audio_seconds });
                }
                Some(StreamReq::HoldPartials(_)) => {
                    if let Some(h) = partial.take() {
                        h.abort();
                    }
                    since_partial = 0;
                }
                Some(StreamReq::EndOfUtterance(eou)) => {
                    let kept = if eou.keep_candidate { candidate.take() } else { None };
                    stop(&mut partial, &mut candidate);
                    let sent = match kept {
                        Some(c) => {
                            buf.clear();
                            let result = c.task.await.unwrap_or_else(|e| Err(ApiError::internal(format!("transcription task failed: {e}"))));
                            self.engine.metrics.candidates_kept.inc();
                            self.send_final(result, utterance, c.audio_seconds, c.started, &tx).await
                        }
                        None => self.final_transcript(&mut buf, utterance, &tx).await,
                    };
                    if !sent {
                        break;
                    }
                    utterance += 1;
                    since_partial = 0;
                }
                Some(StreamReq::Config(_)) => {
                    let _ = tx.send(Err(Status::invalid_argument("StreamingConfig may only be sent first"))).await;
                    break;
                }
                None => {}
            }
        }
        stop(&mut partial, &mut candidate);
        if !buf.is_empty() && !tx.is_closed() {
            self.final_transcript(&mut buf, utterance, &tx).await;
        }
        metrics.streams_active.dec();
    }

    /// Transcribe and send the utterance in `buf` as final, then clear it. False when the
    /// client is gone or the stream must end.
    async fn final_transcript(&self, buf: &mut Vec<f32>, utterance: u32, tx: &Tx) -> bool {
        let start = Instant::now();
        let pcm = match self.to_16k(buf) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        };
        buf.clear();
        let audio_seconds = pcm.len() as f64 / 16_000.0;
        let result = if pcm.is_empty() {
            Ok(voice_whisper::Transcript {
                text: String::new(),
                language: self.language.clone().unwrap_or_default(),
                duration: 0.0,
                segments: vec![],
                window_seconds: 0.0,
            })
        } else {
            self.engine.transcribe(Arc::new(pcm), self.opts(false)).await
        };
        self.send_final(result, utterance, audio_seconds, start, tx).await
    }

    /// Send a final transcript (or the error that replaced it). False when the client is gone
    /// or the stream must end.
    async fn send_final(
        &self,
        result: Result<voice_whisper::Transcript, ApiError>,
        utterance: u32,
        audio_seconds: f64,
        start: Instant,
        tx: &Tx,
    ) -> bool {
        match result {
            Ok(t) => {
                self.engine.metrics.finals.inc();
                tx.send(Ok(pb::StreamingRecognizeResponse {
                    utterance,
                    text: t.text,
                    is_final: true,
                    audio_seconds,
                    processing_ms: start.elapsed().as_secs_f64() * 1e3,
                    language: t.language,
                    window_seconds: t.window_seconds,
                }))
                .await
                .is_ok()
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                false
            }
        }
    }
}
