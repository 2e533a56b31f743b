//! The synthesis engine behind both APIs: request validation, the text front end (voice-g2p),
//! planning into sentence-sized pieces, admission (bounded queue), the model slot with its CPU
//! fallback, streaming piece by piece with cancellation, and TTS metrics.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::{Histogram, IntCounter};
use tokio::sync::mpsc;
use voice_g2p::{G2p, G2pError};
use voice_kokoro::{
    voices::{VoiceError, VoicePack, Voices},
    Kokoro, CONTEXT_LENGTH, SAMPLE_RATE,
};
use voice_runtime::{ApiError, ModelSlot, ServiceContext, WorkQueue};

pub const MIN_SPEED: f32 = 0.25;
pub const MAX_SPEED: f32 = 4.0;

pub struct TtsMetrics {
    pub time_to_first_audio: Histogram,
    pub realtime_factor: Histogram,
    pub characters: IntCounter,
    pub characters_per_second: Histogram,
    pub audio_seconds: IntCounter,
    pub cancelled: IntCounter,
}

impl TtsMetrics {
    pub fn new(ctx: &ServiceContext) -> prometheus::Result<Self> {
        let m = &ctx.metrics;
        Ok(Self {
            time_to_first_audio: m.new_histogram(
                "time_to_first_audio_seconds",
                "From the request to its first audio chunk (queue wait, text front end and the first piece's synthesis)",
                &[0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0],
            )?,
            realtime_factor: m.new_histogram(
                "realtime_factor",
                "Synthesis time divided by the duration of the audio produced, per request",
                &[0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0],
            )?,
            characters: m.new_counter("characters_total", "Input characters synthesized")?,
            characters_per_second: m.new_histogram(
                "characters_per_second",
                "Input characters per second of synthesis time, per request",
                &[10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0],
            )?,
            audio_seconds: m.new_counter("audio_seconds_total", "Seconds of audio produced")?,
            cancelled: m.new_counter("cancelled_total", "Syntheses stopped because the client went away")?,
        })
    }
}

/// One piece of a request, synthesized in one model call.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The text it speaks (normalised; approximate where a sentence was cut).
    pub text: String,
    /// Token ids with the leading and trailing pad.
    pub ids: Vec<i64>,
}

/// A validated request, ready to synthesize.
pub struct Plan {
    pub pieces: Vec<Piece>,
    pub voice: VoicePack,
    pub speed: f32,
    pub characters: usize,
}

/// A chunk of one piece's audio, 24 kHz mono f32, in order: a piece is one chunk or several
/// ([`TtsEngine::chunking`]).
pub struct AudioPiece {
    /// The piece it belongs to.
    pub index: usize,
    /// The piece's text on its first chunk, empty on the others.
    pub text: String,
    pub samples: Vec<f32>,
    /// Set on the first piece: request start -> this audio ready.
    pub time_to_first_audio: Option<Duration>,
}

pub struct TtsEngine {
    pub model_id: String,
    pub slot: ModelSlot<Kokoro>,
    pub voices: Voices,
    pub g2p_us: G2p,
    pub g2p_gb: G2p,
    pub queue: WorkQueue,
    pub metrics: TtsMetrics,
    pub default_voice: String,
    pub max_input_chars: usize,
    /// How pieces are cut into streamed chunks.
    pub chunking: voice_kokoro::Chunking,
}

/// Language of a voice id from its first letter (Kokoro's naming), for listings.
pub fn voice_language(id: &str) -> &'static str {
    match id.chars().next() {
        Some('a') => "en-us",
        Some('b') => "en-gb",
        Some('e') => "es",
        Some('f') => "fr-fr",
        Some('h') => "hi",
        Some('i') => "it",
        Some('j') => "ja",
        Some('p') => "pt-br",
        Some('z') => "zh",
        _ => "unknown",
    }
}

impl TtsEngine {
    /// Is `requested` our model? Empty and OpenAI's TTS model names (sent by clients by default)
    /// mean "the served model".
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        voice_runtime::error::check_model_or_alias(&self.model_id, &["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "kokoro"], requested)
    }

    /// Validate and plan a request: text limits, voice or blend, speed, then the text front end
    /// (blocking: espeak-ng may run) and the cut into pieces.
    pub fn plan(&self, text: &str, voice: Option<&str>, speed: Option<f32>) -> Result<Plan, ApiError> {
        let chars = text.chars().count();
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("`input` is empty").with_param("input"));
        }
        if chars > self.max_input_chars {
            return Err(ApiError::too_large(format!(
                "`input` has {chars} characters; the limit is {} (--max-input-chars). Split long texts into several requests",
                self.max_input_chars
            ))
            .with_param("input"));
        }
        let speed = speed.unwrap_or(1.0);
        if !(speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed)) {
            return Err(ApiError::bad_request(format!("`speed` must be between {MIN_SPEED} and {MAX_SPEED}")).with_param("speed"));
        }
        let spec = crate::voice_names::kokoro_voice(voice.map(str::trim).filter(|v| !v.is_empty()).unwrap_or(&self.default_voice));
        let pack = self.voices.resolve(spec).map_err(|e| match e {
            VoiceError::Unknown(v) => {
                ApiError::bad_request(format!("unknown voice `{v}`; GET /v1/audio/voices lists the {} voices", self.voices.len()))
                    .with_param("voice")
                    .with_code("voice_not_found")
            }
            VoiceError::Malformed(m) => {
                ApiError::bad_request(format!("{m} (a voice id, or a blend like af_heart:0.7+am_adam:0.3)")).with_param("voice")
            }
        })?;
        // British voices read with the British lexicon; every other voice with the American one.
        let g2p = if spec.trim_start().starts_with('b') { &self.g2p_gb } else { &self.g2p_us };
        let chunks = match g2p.pieces(text, CONTEXT_LENGTH - 2, 8) {
            Ok(c) => c,
            Err(G2pError::Empty) => {
                return Err(ApiError::bad_request(
                    "nothing speakable in `input`: markup, emoji, control characters and non-Latin scripts are removed, and nothing was left",
                )
                .with_param("input"))
            }
            Err(e) => return Err(ApiError::internal(format!("text front end: {e}"))),
        };
        let mut pieces = Vec::new();
        for chunk in chunks {
            let ids = g2p.vocab().encode_padded(&chunk.phonemes);
            if ids.len() > 2 {
                pieces.push(Piece { text: chunk.text, ids });
            }
        }
        if pieces.is_empty() {
            return Err(ApiError::bad_request("nothing speakable in `input`").with_param("input"));
        }
        Ok(Plan { pieces, voice: pack, speed, characters: chars })
    }

    /// Synthesize a plan piece by piece on a blocking thread, sending each piece's audio as soon
    /// as it exists. Waits for a model slot first (or 429). Stops early when the receiver is
    /// dropped (client gone). Errors after the first piece arrive as the channel's last item.
    pub async fn synthesize(self: &Arc<Self>, plan: Plan, started: Instant, tx: mpsc::Sender<Result<AudioPiece, ApiError>>) -> Result<(), ApiError> {
        let permit = self.queue.acquire().await?;
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let synth_start = Instant::now();
            let audio_samples = std::cell::Cell::new(0usize);
            for (index, piece) in plan.pieces.iter().enumerate() {
                if tx.is_closed() {
                    engine.metrics.cancelled.inc();
                    tracing::info!(index, pieces = plan.pieces.len(), "client gone: synthesis stopped");
                    return;
                }
                let style = plan.voice.style(piece.ids.len() - 2);
                // Samples of this piece already sent: a retry on the CPU after a device error
                // renders the piece again and sends only what was not sent yet.
                let sent = std::cell::Cell::new(0usize);
                let stop = std::cell::Cell::new(None::<Sent>);
                let result = engine.slot.run(|m, _| {
                    let prepared = m.prepare(&piece.ids, style, plan.speed, None)?;
                    let mut at = 0usize;
                    m.synthesize_chunks(&prepared, &engine.chunking, |chunk| {
                        let new = chunk.len().saturating_sub(sent.get().saturating_sub(at));
                        at += chunk.len();
                        if new == 0 {
                            return true;
                        }
                        let samples = chunk[chunk.len() - new..].to_vec();
                        let first_of_piece = sent.get() == 0;
                        let ttfa = (index == 0 && first_of_piece).then(|| started.elapsed());
                        if let Some(t) = ttfa {
                            engine.metrics.time_to_first_audio.observe(t.as_secs_f64());
                        }
                        sent.set(sent.get() + new);
                        audio_samples.set(audio_samples.get() + new);
                        let text = if first_of_piece { piece.text.clone() } else { String::new() };
                        match send_within(&tx, Ok(AudioPiece { index, text, samples, time_to_first_audio: ttfa }), SLOW_CLIENT_LIMIT) {
                            Sent::Ok => true,
                            other => {
                                stop.set(Some(other));
                                false
                            }
                        }
                    })
                });
                match (result, stop.take()) {
                    (_, Some(Sent::TimedOut)) => {
                        // A client that stops reading must not hold the model slot.
                        engine.metrics.cancelled.inc();
                        tracing::warn!(index, "client stopped reading for {SLOW_CLIENT_LIMIT:?}: synthesis abandoned");
                        return;
                    }
                    (_, Some(_)) => {
                        engine.metrics.cancelled.inc();
                        return;
                    }
                    (Ok(()), None) => {}
                    (Err(e), None) => {
                        tracing::error!(error = %format!("{e:#}"), index, "synthesis failed");
                        let _ = send_within(&tx, Err(ApiError::internal(format!("synthesis failed: {e:#}"))), SLOW_CLIENT_LIMIT);
                        return;
                    }
                }
            }
            let secs = synth_start.elapsed().as_secs_f64();
            let audio_secs = audio_samples.get() as f64 / SAMPLE_RATE as f64;
            engine.metrics.characters.inc_by(plan.characters as u64);
            engine.metrics.audio_seconds.inc_by(audio_secs.round() as u64);
            if audio_secs > 0.0 {
                engine.metrics.realtime_factor.observe(secs / audio_secs);
            }
            if secs > 0.0 {
                engine.metrics.characters_per_second.observe(plan.characters as f64 / secs);
            }
            engine.queue.set_typical_duration(Duration::from_secs_f64(secs));
        });
        Ok(())
    }
}

/// How long a piece may wait for the client to take the previous ones before the synthesis is
/// abandoned (the slot is then free for others).
const SLOW_CLIENT_LIMIT: Duration = Duration::from_secs(30);

enum Sent {
    Ok,
    Closed,
    TimedOut,
}

/// Send from a blocking thread, giving up after `limit` if the channel stays full.
fn send_within<T>(tx: &mpsc::Sender<T>, mut item: T, limit: Duration) -> Sent {
    let start = Instant::now();
    loop {
        match tx.try_send(item) {
            Ok(()) => return Sent::Ok,
            Err(mpsc::error::TrySendError::Closed(_)) => return Sent::Closed,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if start.elapsed() >= limit {
                    return Sent::TimedOut;
                }
                item = back;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A WAV header for a stream of unknown length (16-bit mono): the RIFF and data sizes are
/// 0xFFFFFFFF, the convention streaming encoders (ffmpeg, OpenAI's API) use; readers take the
/// data to the end of the file.
pub fn streaming_wav_header(sample_rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_stops_reading_times_out() {
        let (tx, mut rx) = mpsc::channel(1);
        assert!(matches!(send_within(&tx, 1, Duration::from_millis(50)), Sent::Ok));
        let t = Instant::now();
        assert!(matches!(send_within(&tx, 2, Duration::from_millis(50)), Sent::TimedOut));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(rx.try_recv().unwrap(), 1);
        drop(rx);
        assert!(matches!(send_within(&tx, 3, Duration::from_millis(50)), Sent::Closed));
    }

    #[test]
    fn streaming_header() {
        let h = streaming_wav_header(24_000);
        assert_eq!(h.len(), 44);
        assert_eq!(&h[..4], b"RIFF");
        assert_eq!(&h[36..40], b"data");
    }
}
