//! Endpointing: speech probabilities (one per 32 ms VAD window) in, turn events out.
//!
//! Pure and clock-free (the caller passes each window's arrival instant), so it is unit-tested
//! without audio. Hysteresis: speech starts at `activation` and continues while the probability
//! stays above `deactivation`; a turn ends after `end_silence` of continuous silence, and only
//! counts when it held at least `min_speech` of speech (shorter blips are noise).

use std::time::{Duration, Instant};

/// Silero's window: 512 samples at 16 kHz.
pub const WINDOW: Duration = Duration::from_millis(32);

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub activation: f32,
    pub deactivation: f32,
    /// Speech needed before an utterance counts as a turn.
    pub min_speech: Duration,
    /// Silence that ends a turn.
    pub end_silence: Duration,
    /// Silence after which the final transcript is started (`SilenceBegan`), while the rest of
    /// `end_silence` is waited out; zero: only at the end of the turn.
    pub candidate_silence: Duration,
    /// Speech needed before the user interrupts the agent (barge-in); shorter sounds ("mhm",
    /// a cough) do not stop it.
    pub min_interruption: Duration,
    /// A turn longer than this is ended where it is (the speech-to-text input is bounded).
    pub max_utterance: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            activation: 0.5,
            deactivation: 0.35,
            min_speech: Duration::from_millis(250),
            end_silence: Duration::from_millis(500),
            candidate_silence: Duration::from_millis(96),
            min_interruption: Duration::from_millis(400),
            max_utterance: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// First speech window: start streaming audio to speech-to-text (with pre-roll).
    Onset,
    /// The utterance reached `min_interruption` of speech: it may barge in.
    Interrupting,
    /// `candidate_silence` of silence after enough speech: the turn may be over. Once per
    /// pause; `last_speech` tells the end of turn that follows whether speech came in between.
    SilenceBegan { last_speech: Instant },
    /// Silence after enough speech: the user's turn is over. `last_speech` is when their speech stopped.
    EndOfTurn { speech: Duration, last_speech: Instant },
    /// Silence after too little speech: noise, forget it.
    Discarded { speech: Duration },
}

#[derive(Debug)]
enum State {
    Idle,
    Speech { started: Instant, speech: Duration, silence: Duration, last_speech: Instant, interrupting: bool, candidate: bool },
}

#[derive(Debug)]
pub struct TurnDetector {
    cfg: TurnConfig,
    state: State,
}

impl TurnDetector {
    pub fn new(cfg: TurnConfig) -> Self {
        Self { cfg, state: State::Idle }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Forget any utterance in progress (the user left, the stream restarted).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// One VAD window that ended at `at`. At most two events (e.g. `Onset` then nothing, or
    /// `Interrupting`), in order.
    pub fn push(&mut self, probability: f32, at: Instant) -> Vec<TurnEvent> {
        let cfg = &self.cfg;
        let mut events = Vec::new();
        match &mut self.state {
            State::Idle => {
                if probability >= cfg.activation {
                    self.state = State::Speech {
                        started: at,
                        speech: WINDOW,
                        silence: Duration::ZERO,
                        last_speech: at,
                        interrupting: false,
                        candidate: false,
                    };
                    events.push(TurnEvent::Onset);
                    if WINDOW >= cfg.min_interruption {
                        if let State::Speech { interrupting, .. } = &mut self.state {
                            *interrupting = true;
                        }
                        events.push(TurnEvent::Interrupting);
                    }
                }
            }
            State::Speech { started, speech, silence, last_speech, interrupting, candidate } => {
                if probability >= cfg.deactivation {
                    *speech += WINDOW;
                    *silence = Duration::ZERO;
                    *last_speech = at;
                    *candidate = false;
                    if !*interrupting && *speech >= cfg.min_interruption {
                        *interrupting = true;
                        events.push(TurnEvent::Interrupting);
                    }
                } else {
                    *silence += WINDOW;
                    let worth = !cfg.candidate_silence.is_zero() && *speech >= cfg.min_speech && *silence < cfg.end_silence;
                    if !*candidate && worth && *silence >= cfg.candidate_silence {
                        *candidate = true;
                        events.push(TurnEvent::SilenceBegan { last_speech: *last_speech });
                    }
                }
                let too_long = at.saturating_duration_since(*started) >= cfg.max_utterance;
                if *silence >= cfg.end_silence || too_long {
                    let (speech, last_speech) = (*speech, *last_speech);
                    events.push(if speech >= cfg.min_speech {
                        TurnEvent::EndOfTurn { speech, last_speech }
                    } else {
                        TurnEvent::Discarded { speech }
                    });
                    self.state = State::Idle;
                }
            }
        }
        events
    }
}

/// Words people say to show they are listening, not to take the turn. An utterance made only
/// of these (or nothing) is a false interruption: the agent goes on where it stopped.
pub fn is_backchannel(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "mhm", "mm", "mmm", "hmm", "hm", "uh", "huh", "um", "umm", "ah", "oh", "yeah", "yes", "yep", "yup", "ok", "okay", "right", "sure", "alright",
        "see", "i", "got", "it", "cool", "nice", "wow", "hmm-hmm", "mm-hmm", "uh-huh", "mhmm", "aha",
    ];
    // Whisper writes "Mm-hmm." / "Uh-huh." / "(coughs)" / "[BLANK_AUDIO]"; drop bracketed tags.
    let mut cleaned = String::with_capacity(text.len());
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '(' | '[' | '*' if depth >= 0 => depth += 1,
            ')' | ']' => depth = (depth - 1).max(0),
            _ if depth > 0 => {}
            c if c.is_alphanumeric() || c == '-' || c == '\'' => cleaned.extend(c.to_lowercase()),
            _ => cleaned.push(' '),
        }
    }
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    words.len() <= 4 && words.iter().all(|w| WORDS.contains(w) || WORDS.contains(&w.trim_matches('-')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(det: &mut TurnDetector, probs: &[f32], t0: Instant) -> Vec<(usize, TurnEvent)> {
        let mut out = Vec::new();
        for (i, &p) in probs.iter().enumerate() {
            for e in det.push(p, t0 + WINDOW * (i as u32 + 1)) {
                out.push((i, e));
            }
        }
        out
    }

    #[test]
    fn a_turn_ends_after_the_configured_silence() {
        let mut det = TurnDetector::new(TurnConfig::default());
        let t0 = Instant::now();
        // 20 windows of speech (640 ms), then 20 of silence.
        let probs: Vec<f32> = std::iter::repeat_n(0.9, 20).chain(std::iter::repeat_n(0.05, 20)).collect();
        let ev = run(&mut det, &probs, t0);
        assert_eq!(ev[0], (0, TurnEvent::Onset));
        // 400 ms of speech = window 12 (13 windows x 32 ms = 416 ms).
        assert_eq!(ev[1], (12, TurnEvent::Interrupting));
        // 96 ms of silence (3 windows after index 19): the final transcript may start.
        assert_eq!(ev[2], (22, TurnEvent::SilenceBegan { last_speech: t0 + WINDOW * 20 }));
        // 500 ms of silence = 16 windows after the last speech window (index 19): index 35.
        match &ev[3] {
            (35, TurnEvent::EndOfTurn { speech, last_speech }) => {
                assert_eq!(*speech, WINDOW * 20);
                assert_eq!(*last_speech, t0 + WINDOW * 20);
            }
            other => panic!("expected end of turn at window 35, got {other:?}"),
        }
        assert_eq!(ev.len(), 4);
    }

    #[test]
    fn hysteresis_keeps_a_turn_through_a_dip_and_short_blips_are_noise() {
        let mut det = TurnDetector::new(TurnConfig::default());
        let t0 = Instant::now();
        // Speech with a dip to 0.4 (above deactivation) and a 320 ms pause (below end_silence).
        let mut probs = vec![0.9; 10];
        probs.extend([0.4; 5]);
        probs.extend([0.1; 10]);
        probs.extend([0.8; 10]);
        probs.extend([0.0; 16]);
        let ev = run(&mut det, &probs, t0);
        let ends: Vec<_> = ev.iter().filter(|(_, e)| matches!(e, TurnEvent::EndOfTurn { .. })).collect();
        assert_eq!(ends.len(), 1, "{ev:?}");
        // One candidate per pause: the 320 ms one (speech resumed after it) and the last; the
        // end of turn's last speech is the second's.
        let began: Vec<Instant> =
            ev.iter().filter_map(|(_, e)| if let TurnEvent::SilenceBegan { last_speech } = e { Some(*last_speech) } else { None }).collect();
        assert_eq!(began.len(), 2, "{ev:?}");
        match ends[0].1 {
            TurnEvent::EndOfTurn { last_speech, .. } => assert_eq!(last_speech, began[1]),
            _ => unreachable!(),
        }
        // A 96 ms blip: onset, then discarded.
        let ev = run(&mut det, &[0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], t0);
        assert_eq!(ev.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), vec![TurnEvent::Onset, TurnEvent::Discarded { speech: WINDOW * 3 }]);
        assert!(!det.in_speech());
    }

    #[test]
    fn endless_speech_is_cut_at_max_utterance() {
        let cfg = TurnConfig { max_utterance: Duration::from_secs(1), ..TurnConfig::default() };
        let mut det = TurnDetector::new(cfg);
        let ev = run(&mut det, &[0.9; 40], Instant::now());
        assert!(ev.iter().any(|(i, e)| matches!(e, TurnEvent::EndOfTurn { .. }) && *i == 32), "{ev:?}");
    }

    #[test]
    fn backchannels() {
        for t in ["Mm-hmm.", "mhm", "Uh-huh", "Yeah.", "okay", "", " [BLANK_AUDIO] ", "(coughs)", "Oh, right.", "I see."] {
            assert!(is_backchannel(t), "{t:?}");
        }
        for t in ["Stop.", "Wait, what about Berlin?", "What is the capital of France?", "yeah but why"] {
            assert!(!is_backchannel(t), "{t:?}");
        }
    }
}
