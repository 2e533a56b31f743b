//! Per-turn timing, as data messages, Prometheus histograms and one log line per turn.
//!
//! Every stage is the difference of two consecutive instants of the same turn, so the stages add
//! up exactly to voice-to-voice latency (user stopped speaking -> first agent audio published):
//!
//! ```text
//! last speech ─end_of_utterance─> end of turn ─stt_final─> transcript ─rag─> context
//!   ─llm_ttft─> first token ─first_sentence─> first sentence ─tts_ttfa─> first audio ─publish─> published
//! ```

use std::time::Instant;

use prometheus::{Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec};
use serde::Serialize;
use voice_runtime::Metrics;

#[derive(Debug, Clone, Default)]
pub struct TurnTiming {
    pub last_speech: Option<Instant>,
    pub end_of_turn: Option<Instant>,
    pub transcript: Option<Instant>,
    pub context: Option<Instant>,
    pub first_token: Option<Instant>,
    pub first_sentence: Option<Instant>,
    pub first_audio: Option<Instant>,
    pub published: Option<Instant>,
    /// voice-llm's prompt, and how much of it came from its prefix cache.
    pub llm_prompt_tokens: Option<u32>,
    pub llm_cached_tokens: Option<u32>,
}

/// What the frontend shows and the tests add up (milliseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurnReport {
    pub turn: u64,
    pub end_of_utterance_ms: f64,
    pub stt_final_ms: f64,
    pub rag_ms: f64,
    pub llm_ttft_ms: f64,
    pub first_sentence_ms: f64,
    pub tts_ttfa_ms: f64,
    pub publish_ms: f64,
    pub voice_to_voice_ms: f64,
    pub interrupted: bool,
    /// 0 when the reply did not come from the LLM (or it had not finished).
    pub llm_prompt_tokens: u32,
    pub llm_cached_tokens: u32,
}

impl TurnTiming {
    /// The report, when the turn got as far as publishing audio. Stages are whole microseconds,
    /// so their sum is exactly the total.
    pub fn report(&self, turn: u64, interrupted: bool) -> Option<TurnReport> {
        let points = [
            self.last_speech?,
            self.end_of_turn?,
            self.transcript?,
            self.context?,
            self.first_token?,
            self.first_sentence?,
            self.first_audio?,
            self.published?,
        ];
        // Signed: an instant recorded out of order shows as a negative stage (the tests assert
        // none is), instead of a zero that hides it.
        let signed = |from: Instant, to: Instant| match to.checked_duration_since(from) {
            Some(d) => d.as_micros() as i64,
            None => -(from.duration_since(to).as_micros() as i64),
        };
        let us: Vec<i64> = points.windows(2).map(|w| signed(w[0], w[1])).collect();
        let total: i64 = us.iter().sum();
        let ms = |v: i64| v as f64 / 1000.0;
        Some(TurnReport {
            turn,
            end_of_utterance_ms: ms(us[0]),
            stt_final_ms: ms(us[1]),
            rag_ms: ms(us[2]),
            llm_ttft_ms: ms(us[3]),
            first_sentence_ms: ms(us[4]),
            tts_ttfa_ms: ms(us[5]),
            publish_ms: ms(us[6]),
            voice_to_voice_ms: ms(total),
            interrupted,
            llm_prompt_tokens: self.llm_prompt_tokens.unwrap_or(0),
            llm_cached_tokens: self.llm_cached_tokens.unwrap_or(0),
        })
    }
}

#[derive(Clone)]
pub struct AgentMetrics {
    /// `voice_agent_stage_seconds{stage}`: end_of_utterance, stt_final, rag, llm_ttft,
    /// first_sentence, tts_ttfa, publish (the dashboards' and alerts' breakdown).
    pub stage: HistogramVec,
    pub voice_to_voice: Histogram,
    pub turns: IntCounterVec,
    pub interruptions: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub conversations: Gauge,
    pub barge_in_flush: Histogram,
    pub reconnects: IntCounter,
    /// Silences inside a reply that was still being made: the listener heard the agent stall
    /// (speech made slower than it plays, e.g. a streamed chunk late).
    pub playout_gap: Histogram,
    /// End-of-turn model verdicts: complete (the turn ended), incomplete (kept listening), stale
    /// (speech resumed before the verdict), error; and max_silence (ended by the maximum wait).
    pub end_of_turn_decisions: IntCounterVec,
    /// CPU time of one end-of-turn model decision.
    pub end_of_turn_model: Histogram,
}

impl AgentMetrics {
    pub fn new(m: &Metrics) -> prometheus::Result<Self> {
        let lat = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
        let conversations = m.new_gauge("conversations", "Rooms the agent is in now")?;
        Ok(Self {
            stage: m.new_histogram_vec(
                "stage_seconds",
                "One stage of a turn: end_of_utterance (endpointing silence), stt_final, rag, llm_ttft, first_sentence, tts_ttfa, publish",
                &["stage"],
                &lat,
            )?,
            voice_to_voice: m.new_histogram("voice_to_voice_seconds", "User stopped speaking -> first agent audio published", &lat)?,
            turns: m.new_counter_vec("turns_total", "User turns by outcome (answered, interrupted, failed, empty)", &["outcome"])?,
            interruptions: m.new_counter_vec("interruptions_total", "Barge-ins: true (the agent stopped) or false (it resumed)", &["kind"])?,
            backend_errors: m.new_counter_vec("backend_errors_total", "Failed calls to a backend service after retries", &["backend"])?,
            conversations,
            barge_in_flush: m.new_histogram(
                "barge_in_flush_seconds",
                "Interruption decided -> queued agent audio flushed",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1],
            )?,
            reconnects: m.new_counter("room_reconnects_total", "Times the agent rejoined a room after losing it")?,
            playout_gap: m.new_histogram(
                "playout_gap_seconds",
                "A silence inside a reply because its next audio was not ready when the previous ran out",
                &[0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
            )?,
            end_of_turn_decisions: m.new_counter_vec(
                "end_of_turn_decisions_total",
                "End-of-turn model verdicts at a pause: complete, incomplete, stale, error; max_silence: ended by --max-end-of-turn",
                &["outcome"],
            )?,
            end_of_turn_model: m.new_histogram(
                "end_of_turn_model_seconds",
                "One end-of-turn model decision (features and network)",
                &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
            )?,
        })
    }

    pub fn observe(&self, r: &TurnReport) {
        for (stage, ms) in [
            ("end_of_utterance", r.end_of_utterance_ms),
            ("stt_final", r.stt_final_ms),
            ("rag", r.rag_ms),
            ("llm_ttft", r.llm_ttft_ms),
            ("first_sentence", r.first_sentence_ms),
            ("tts_ttfa", r.tts_ttfa_ms),
            ("publish", r.publish_ms),
        ] {
            self.stage.with_label_values(&[stage]).observe(ms.max(0.0) / 1e3);
        }
        self.voice_to_voice.observe(r.voice_to_voice_ms.max(0.0) / 1e3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stages_add_up_to_voice_to_voice_exactly() {
        let t0 = Instant::now();
        let at = |ms: u64, us: u64| Some(t0 + Duration::from_millis(ms) + Duration::from_micros(us));
        let t = TurnTiming {
            last_speech: at(0, 0),
            end_of_turn: at(512, 3),
            transcript: at(700, 11),
            context: at(720, 0),
            first_token: at(900, 7),
            first_sentence: at(1100, 1),
            first_audio: at(1500, 999),
            published: at(1502, 5),
            ..Default::default()
        };
        let r = t.report(3, false).unwrap();
        let sum = r.end_of_utterance_ms + r.stt_final_ms + r.rag_ms + r.llm_ttft_ms + r.first_sentence_ms + r.tts_ttfa_ms + r.publish_ms;
        assert!((sum - r.voice_to_voice_ms).abs() < 1e-9, "{sum} vs {}", r.voice_to_voice_ms);
        assert_eq!(r.voice_to_voice_ms, 1502.005);
        assert_eq!(TurnTiming { published: None, ..t.clone() }.report(3, false), None);
        // An instant recorded out of order is a negative stage, not a hidden zero.
        let r = TurnTiming { context: at(690, 0), ..t }.report(3, false).unwrap();
        assert!(r.rag_ms < 0.0 && r.stt_final_ms > 0.0, "{r:?}");
    }
}
