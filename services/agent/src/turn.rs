//! Endpointing: speech probabilities (one per 32 ms VAD window) in, turn events out.
//!
//! Pure and clock-free (the caller passes each window's arrival instant), so it is unit-tested
//! without audio. Hysteresis: speech starts at `activation` and continues while the probability
//! stays above `deactivation`; a turn ends after `end_silence` of continuous silence, and only
//! counts when it held at least `min_speech` of speech (shorter blips are noise).
//!
//! With a semantic end-of-turn model (`max_end_silence` set), silence alone does not end a turn:
//! the detector emits [`TurnEvent::PauseToJudge`] once per pause, at `candidate_silence` (when the
//! final transcript starts too, so both overlap the rest of the silence; else at `end_silence`),
//! the caller runs the model and reports "finished" with [`TurnDetector::end_turn`], which ends
//! the turn once `end_silence` has passed; on "not finished" the turn ends when speech resumes and
//! stops again, or anyway after `max_end_silence` of silence.

use std::time::{Duration, Instant};

/// Silero's window: 512 samples at 16 kHz.
pub const WINDOW: Duration = Duration::from_millis(32);
/// The silence that ends a turn without a semantic model.
pub const FIXED_END_SILENCE: Duration = Duration::from_millis(500);
/// With a semantic model: the silence at which its "finished" ends the turn, and the longest
/// silence waited after its "not finished".
pub const MODEL_END_SILENCE: Duration = Duration::from_millis(200);
pub const MAX_END_SILENCE: Duration = Duration::from_millis(2500);

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub activation: f32,
    pub deactivation: f32,
    /// Speech needed before an utterance counts as a turn.
    pub min_speech: Duration,
    /// Silence that ends a turn (without a semantic model), or at which the model's "finished"
    /// ends it.
    pub end_silence: Duration,
    /// With a semantic model: the silence after which a turn ends even when the model said the
    /// speaker had not finished. `None`: no model, `end_silence` ends the turn.
    pub max_end_silence: Option<Duration>,
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
            end_silence: FIXED_END_SILENCE,
            max_end_silence: None,
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
    /// With a semantic model, `candidate_silence` of silence after enough speech: ask it whether
    /// the user finished (then call [`TurnDetector::end_turn`] with this `last_speech`). Once per
    /// pause.
    PauseToJudge { last_speech: Instant },
    /// Silence after enough speech: the user's turn is over. `last_speech` is when their speech stopped.
    EndOfTurn { speech: Duration, last_speech: Instant, why: EndReason },
    /// Silence after too little speech: noise, forget it.
    Discarded { speech: Duration },
}

/// What ended a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `end_silence` without a model.
    Silence,
    /// The model said "finished" (and `end_silence` had passed).
    Model,
    /// `max_end_silence` with a model that had not said "finished".
    MaxSilence,
    /// `max_utterance`: speech too long to wait for its end.
    MaxUtterance,
}

#[derive(Debug)]
enum State {
    Idle,
    Speech {
        started: Instant,
        speech: Duration,
        silence: Duration,
        last_speech: Instant,
        interrupting: bool,
        candidate: bool,
        /// The model was asked about this pause.
        judging: bool,
        /// It said "finished": the turn ends when the silence reaches `end_silence`.
        finished: bool,
    },
}

#[derive(Debug)]
pub struct TurnDetector {
    cfg: TurnConfig,
    state: State,
}

impl TurnConfig {
    /// This config with a semantic end-of-turn model: its "finished" ends a turn at
    /// `end_silence` (default [`MODEL_END_SILENCE`]), its "not finished" waits at most `max`.
    pub fn with_end_of_turn_model(self, end_silence: Option<Duration>, max: Duration) -> Self {
        let end_silence = end_silence.unwrap_or(MODEL_END_SILENCE);
        Self { end_silence, max_end_silence: Some(max.max(end_silence)), ..self }
    }
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
                        judging: false,
                        finished: false,
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
            State::Speech { started, speech, silence, last_speech, interrupting, candidate, judging, finished } => {
                if probability >= cfg.deactivation {
                    *speech += WINDOW;
                    *silence = Duration::ZERO;
                    *last_speech = at;
                    *candidate = false;
                    *judging = false;
                    *finished = false;
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
                let ends = match cfg.max_end_silence {
                    None => *silence >= cfg.end_silence,
                    Some(max) => {
                        let ask_at = if cfg.candidate_silence.is_zero() { cfg.end_silence } else { cfg.candidate_silence.min(cfg.end_silence) };
                        if !*judging && *silence >= ask_at && *speech >= cfg.min_speech && *silence < max {
                            *judging = true;
                            events.push(TurnEvent::PauseToJudge { last_speech: *last_speech });
                        }
                        *silence >= max || (*silence >= cfg.end_silence && (*finished || *speech < cfg.min_speech))
                    }
                };
                if ends || too_long {
                    let (speech, last_speech) = (*speech, *last_speech);
                    let why = match cfg.max_end_silence {
                        _ if !ends => EndReason::MaxUtterance,
                        None => EndReason::Silence,
                        Some(max) if *finished && *silence < max => EndReason::Model,
                        Some(_) => EndReason::MaxSilence,
                    };
                    events.push(if speech >= cfg.min_speech {
                        TurnEvent::EndOfTurn { speech, last_speech, why }
                    } else {
                        TurnEvent::Discarded { speech }
                    });
                    self.state = State::Idle;
                }
            }
        }
        events
    }

    /// The semantic model judged the pause after `last_speech` to end the turn. `Ok(Some)`: the
    /// turn ends now; `Ok(None)`: it ends in [`TurnDetector::push`] once `end_silence` has passed;
    /// `Err(())`: the verdict is stale (speech came since, or the turn already ended).
    #[allow(clippy::result_unit_err)]
    pub fn end_turn(&mut self, last_speech: Instant) -> Result<Option<TurnEvent>, ()> {
        let end_silence = self.cfg.end_silence;
        match &mut self.state {
            State::Speech { speech, silence, last_speech: l, judging: true, finished, .. } if *l == last_speech => {
                if *silence < end_silence {
                    *finished = true;
                    return Ok(None);
                }
                let speech = *speech;
                self.state = State::Idle;
                Ok(Some(TurnEvent::EndOfTurn { speech, last_speech, why: EndReason::Model }))
            }
            _ => Err(()),
        }
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
            (35, TurnEvent::EndOfTurn { speech, last_speech, why: EndReason::Silence }) => {
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
    fn with_a_semantic_model_a_pause_is_judged_and_ends_by_verdict_or_at_the_maximum() {
        let cfg = TurnConfig { end_silence: Duration::from_millis(200), max_end_silence: Some(Duration::from_millis(2500)), ..TurnConfig::default() };
        let mut det = TurnDetector::new(cfg.clone());
        let t0 = Instant::now();
        // 20 windows of speech, then silence: judged once, with the final transcript's start at
        // 96 ms (3 windows: index 22).
        let probs: Vec<f32> = std::iter::repeat_n(0.9, 20).chain(std::iter::repeat_n(0.05, 30)).collect();
        let ev = run(&mut det, &probs, t0);
        let judged: Vec<_> = ev.iter().filter(|(_, e)| matches!(e, TurnEvent::PauseToJudge { .. })).collect();
        assert_eq!(judged.len(), 1, "{ev:?}");
        assert_eq!(*judged[0], (22, TurnEvent::PauseToJudge { last_speech: t0 + WINDOW * 20 }));
        // Not ended by the silence alone (30 windows = 960 ms < 2.5 s).
        assert!(!ev.iter().any(|(_, e)| matches!(e, TurnEvent::EndOfTurn { .. })), "{ev:?}");
        // A stale verdict (another pause) ends nothing; the right one ends the turn once.
        assert_eq!(det.end_turn(t0), Err(()));
        assert_eq!(
            det.end_turn(t0 + WINDOW * 20),
            Ok(Some(TurnEvent::EndOfTurn { speech: WINDOW * 20, last_speech: t0 + WINDOW * 20, why: EndReason::Model }))
        );
        assert_eq!(det.end_turn(t0 + WINDOW * 20), Err(()));
        assert!(!det.in_speech());

        // A "finished" that comes before 200 ms of silence takes effect at 200 ms (7 windows).
        let mut det = TurnDetector::new(cfg.clone());
        let ev = run(&mut det, &probs[..24], t0);
        assert!(matches!(ev.last(), Some((22, TurnEvent::PauseToJudge { .. }))), "{ev:?}");
        assert_eq!(det.end_turn(t0 + WINDOW * 20), Ok(None));
        let ev: Vec<_> = (24..30).flat_map(|i| det.push(0.05, t0 + WINDOW * (i + 1)).into_iter().map(move |e| (i, e))).collect();
        assert_eq!(ev, vec![(26, TurnEvent::EndOfTurn { speech: WINDOW * 20, last_speech: t0 + WINDOW * 20, why: EndReason::Model })]);
        // ... unless speech resumes first: then the verdict is void.
        let mut det = TurnDetector::new(cfg.clone());
        run(&mut det, &probs[..24], t0);
        assert_eq!(det.end_turn(t0 + WINDOW * 20), Ok(None));
        let ev: Vec<_> = [0.9, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
            .iter()
            .enumerate()
            .flat_map(|(i, &p)| det.push(p, t0 + WINDOW * (25 + i as u32)))
            .collect();
        assert!(!ev.iter().any(|e| matches!(e, TurnEvent::EndOfTurn { .. })), "{ev:?}");

        // "Not finished": speech resumes; the next pause is judged again; without a verdict the
        // turn ends at 2.5 s of silence (79 windows: 2528 ms).
        let mut det = TurnDetector::new(cfg);
        let mut probs: Vec<f32> = std::iter::repeat_n(0.9, 20).collect();
        probs.extend(std::iter::repeat_n(0.05, 12));
        probs.extend(std::iter::repeat_n(0.9, 10));
        probs.extend(std::iter::repeat_n(0.05, 80));
        let ev = run(&mut det, &probs, t0);
        let judged: Vec<usize> = ev.iter().filter(|(_, e)| matches!(e, TurnEvent::PauseToJudge { .. })).map(|(i, _)| *i).collect();
        assert_eq!(judged, vec![22, 44], "{ev:?}");
        // A verdict on the first pause arriving after speech resumed is stale.
        assert_eq!(det.end_turn(t0 + WINDOW * 20), Err(()));
        let ends: Vec<usize> =
            ev.iter().filter(|(_, e)| matches!(e, TurnEvent::EndOfTurn { why: EndReason::MaxSilence, .. })).map(|(i, _)| *i).collect();
        assert_eq!(ends, vec![41 + 79], "{ev:?}");
    }

    #[test]
    fn endless_speech_is_cut_at_max_utterance() {
        let cfg = TurnConfig { max_utterance: Duration::from_secs(1), ..TurnConfig::default() };
        let mut det = TurnDetector::new(cfg);
        let ev = run(&mut det, &[0.9; 40], Instant::now());
        assert!(ev.iter().any(|(i, e)| matches!(e, TurnEvent::EndOfTurn { why: EndReason::MaxUtterance, .. }) && *i == 32), "{ev:?}");
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
