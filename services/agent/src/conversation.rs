//! One conversation: the audio loop of one room.
//!
//! ```text
//! user audio 16 kHz ─> Silero VAD (32 ms windows) ─> TurnDetector
//!    Onset          open a voice-stt stream (with 300 ms pre-roll), partial transcripts to the room
//!    Interrupting   the agent is talking: flush its queued audio now, pause its reply
//!    SilenceBegan   FinalCandidate: voice-stt starts the final transcript now, on the audio so far
//!    PauseToJudge   (with an end-of-turn model) is the thought finished? yes: EndOfTurn now;
//!                   no: keep listening (the turn ends at the next pause, or after the maximum)
//!    EndOfTurn      EndOfUtterance (keeping the candidate if no speech came since) -> final transcript
//! final transcript ─> (paused reply? backchannel: resume it / words: cancel it) ─> new reply:
//!    voice-embed context ─> voice-llm tokens ─> sentences ─> voice-tts (one sentence at a time)
//!    ─> 24 -> 48 kHz, 10 ms frames ─> AgentOutput (the room), first audio before the answer is done
//! answer synthesized ─> voice-llm reads the history as the next prompt will start (prefix-cache
//!    warm-up, while the user listens), so the next turn prefills only its question
//! ```
//!
//! The loop owns all state; the speech-to-text stream and the reply run as tasks that report
//! back through one channel, so no state is shared but the reply's timing and pause switch.
//! This file is the turn-taking side (VAD, endpointing, transcripts, barge-in, what a reply is
//! for); the reply pipeline itself (context, tokens, sentences, speech, playout) is `reply.rs`.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use voice_proto::stt::v1::{
    streaming_recognize_request::Request as SttReq, AudioChunk, EndOfUtterance, FinalCandidate, HoldPartials, StreamingConfig,
    StreamingRecognizeRequest, TranscribeRequest,
};

use crate::{
    backends::{retry, Backends},
    end_of_turn::EndOfTurnModel,
    memory::Memory,
    metrics::{AgentMetrics, TurnTiming},
    reply::ReplyJob,
    transport::{AgentOutput, TransportEvent, INPUT_RATE},
    turn::{is_backchannel, EndReason, TurnConfig, TurnDetector, TurnEvent},
    vad::Vad,
};

/// Said when a backend stays unreachable after the retries.
const SORRY_STT: &str = "Sorry, I didn't catch that. I'm having trouble hearing right now.";

/// Data message topics (the frontend's contract).
pub const TOPIC_STATE: &str = "agent.state";
pub const TOPIC_TRANSCRIPT: &str = "agent.transcript";
pub const TOPIC_METRICS: &str = "agent.metrics";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub turn: TurnConfig,
    pub system_prompt: String,
    pub memory_tokens: usize,
    /// Words before the first reply piece may end at a comma (0: sentences only).
    pub first_clause_words: usize,
    /// Audio kept from before speech onset and sent with the utterance (VAD onsets are late).
    pub preroll: Duration,
    /// Said when a user joins; empty: wait for them to speak.
    pub greeting: String,
    /// End-of-turn model probability above which a pause ends the turn.
    pub turn_threshold: f32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            turn: TurnConfig::default(),
            system_prompt: "You are a helpful voice assistant. Answer in one or two short spoken sentences, in plain text without lists or markdown."
                .into(),
            memory_tokens: 1024,
            first_clause_words: 4,
            preroll: Duration::from_millis(300),
            greeting: String::new(),
            turn_threshold: voice_smart_turn::THRESHOLD,
        }
    }
}

/// What every conversation shares.
#[derive(Clone)]
pub struct Shared {
    pub backends: Backends,
    pub vad: Arc<dyn Vad>,
    /// Semantic end of turn; `None`: the fixed silence ends turns (the turn config must then
    /// have no `max_end_silence`).
    pub end_of_turn: Option<Arc<dyn EndOfTurnModel>>,
    pub metrics: AgentMetrics,
    pub config: Arc<AgentConfig>,
}

/// Visible from outside the loop (gRPC ListConversations, /v1/conversations).
#[derive(Debug)]
pub struct Status {
    pub room: String,
    pub started: Instant,
    pub state: Mutex<&'static str>,
    pub turns: AtomicUsize,
}

impl Status {
    pub fn new(room: &str) -> Arc<Self> {
        Arc::new(Self { room: room.into(), started: Instant::now(), state: Mutex::new("listening"), turns: AtomicUsize::new(0) })
    }
}

/// Reports from the tasks to the loop.
#[derive(Debug)]
pub(crate) enum Internal {
    SttPartial {
        utterance: u64,
        text: String,
    },
    SttFinal {
        utterance: u64,
        text: String,
    },
    /// The streaming recognizer failed; the loop falls back to one unary call with the audio.
    SttStreamFailed {
        utterance: u64,
        error: String,
    },
    SttFailed {
        utterance: u64,
        error: String,
    },
    /// The end-of-turn model's answer for the pause after `last_speech`.
    TurnVerdict {
        last_speech: Instant,
        probability: Result<f32, String>,
        took: Duration,
    },
    FirstAudio {
        turn: u64,
    },
    Sentence {
        turn: u64,
        text: String,
    },
    /// Every sentence of the reply is audio (the LLM is done too).
    Synthesized {
        turn: u64,
    },
    ReplyDone {
        turn: u64,
        error: Option<String>,
    },
}

/// The user's utterance while it is being spoken and transcribed.
struct Utterance {
    id: u64,
    audio: Vec<i16>,
    stt: Option<mpsc::UnboundedSender<StreamingRecognizeRequest>>,
    task: JoinHandle<()>,
    /// The last speech before the FinalCandidate sent, if one was.
    candidate: Option<Instant>,
    /// Set at end of turn.
    timing: Option<TurnTiming>,
}

pub(crate) enum ReplySource {
    /// The conversation so far (the question and any passages are added by the reply).
    Llm(Vec<voice_proto::llm::v1::ChatMessage>),
    Fixed(String),
}

struct Reply {
    turn: u64,
    user_text: String,
    pause: watch::Sender<bool>,
    task: JoinHandle<()>,
    timing: Arc<Mutex<TurnTiming>>,
    /// Sentences in order, and how many of them have started playing.
    sentences: Arc<Mutex<Vec<String>>>,
    spoken: Arc<AtomicUsize>,
    /// The text as the LLM generated it (the history keeps this, not the cleaned sentences).
    generated: Arc<Mutex<String>>,
    speaking: bool,
}

impl Reply {
    fn paused(&self) -> bool {
        *self.pause.borrow()
    }
    fn spoken_text(&self) -> String {
        let s = self.sentences.lock().unwrap();
        s[..self.spoken.load(Ordering::SeqCst).min(s.len())].join(" ")
    }
    fn full_text(&self) -> String {
        self.sentences.lock().unwrap().join(" ")
    }
    /// What the history keeps of this reply: the model's own text when it was heard whole.
    fn remembered_text(&self, interrupted: bool) -> String {
        let generated = self.generated.lock().unwrap().clone();
        match interrupted {
            true => self.spoken_text(),
            false if generated.trim().is_empty() => self.full_text(),
            false => generated,
        }
    }
}

pub struct Conversation {
    shared: Shared,
    out: Arc<dyn AgentOutput>,
    status: Arc<Status>,
    tx: mpsc::UnboundedSender<Internal>,
    rx: mpsc::UnboundedReceiver<Internal>,
    vad_state: Box<dyn crate::vad::VadStream>,
    detector: TurnDetector,
    preroll: VecDeque<i16>,
    utterances: Vec<Utterance>,
    next_id: u64,
    reply: Option<Reply>,
    memory: Memory,
    /// The prefix-cache warm-up in flight (a newer one replaces it).
    warm_up: Option<JoinHandle<()>>,
}

impl Conversation {
    pub fn new(shared: Shared, out: Arc<dyn AgentOutput>, status: Arc<Status>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let cfg = shared.config.clone();
        Self {
            vad_state: shared.vad.stream(),
            detector: TurnDetector::new(cfg.turn.clone()),
            preroll: VecDeque::new(),
            utterances: Vec::new(),
            next_id: 1,
            reply: None,
            memory: Memory::new(cfg.system_prompt.clone(), cfg.memory_tokens),
            warm_up: None,
            shared,
            out,
            status,
            tx,
            rx,
        }
    }

    /// Run until the room closes, the last user leaves or `cancel` fires.
    pub async fn run(mut self, mut events: mpsc::Receiver<TransportEvent>, cancel: CancellationToken) -> Result<()> {
        self.set_state("listening", 0, false).await;
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                ev = events.recv() => match ev {
                    Some(TransportEvent::Audio(pcm)) => self.on_audio(&pcm).await,
                    Some(TransportEvent::UserJoined(who)) => {
                        tracing::info!(room = %self.status.room, user = %who, "user joined");
                        let greeting = self.shared.config.greeting.clone();
                        if !greeting.is_empty() && self.reply.is_none() {
                            let id = self.next_id();
                            self.start_reply(id, String::new(), ReplySource::Fixed(greeting), TurnTiming::default()).await;
                        }
                    }
                    Some(TransportEvent::UserLeft(who)) => {
                        tracing::info!(room = %self.status.room, user = %who, "user left; ending the conversation");
                        break Ok(());
                    }
                    Some(TransportEvent::Closed(why)) => break Err(anyhow::anyhow!("room closed: {why}")),
                    None => break Ok(()),
                },
                Some(msg) = self.rx.recv() => self.on_internal(msg).await,
            }
        };
        // Clean up: stop speaking, stop every task (dropping their gRPC streams cancels them).
        if let Some(r) = self.reply.take() {
            r.task.abort();
            self.out.flush();
        }
        for u in self.utterances.drain(..) {
            u.task.abort();
        }
        if let Some(w) = self.warm_up.take() {
            w.abort();
        }
        result
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn send(&self, topic: &'static str, v: serde_json::Value) {
        if let Err(e) = self.out.send_data(topic, v.to_string().into_bytes()).await {
            tracing::debug!(error = %e, topic, "data message not sent");
        }
    }

    async fn set_state(&self, state: &'static str, turn: u64, interrupted: bool) {
        *self.status.state.lock().unwrap() = state;
        self.send(TOPIC_STATE, json!({"state": state, "turn": turn, "interrupted": interrupted})).await;
    }

    async fn on_audio(&mut self, pcm: &[i16]) {
        let now = Instant::now();
        // Keep the pre-roll, and stream to the utterance in progress.
        let keep = (self.shared.config.preroll.as_millis() as usize) * (INPUT_RATE as usize / 1000);
        self.preroll.extend(pcm.iter().copied());
        while self.preroll.len() > keep {
            self.preroll.pop_front();
        }
        if let Some(u) = self.utterances.last_mut().filter(|u| u.timing.is_none()) {
            u.audio.extend_from_slice(pcm);
            if let Some(tx) = &u.stt {
                let _ = tx.send(StreamingRecognizeRequest { request: Some(SttReq::Audio(AudioChunk { pcm: to_bytes(pcm) })) });
            }
        }
        let probs = match self.vad_state.push(pcm) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "voice activity detection failed on a frame");
                return;
            }
        };
        for p in probs {
            for ev in self.detector.push(p, now) {
                if matches!(ev, TurnEvent::EndOfTurn { why: EndReason::MaxSilence, .. }) {
                    self.shared.metrics.end_of_turn_decisions.with_label_values(&["max_silence"]).inc();
                }
                self.on_turn_event(ev).await;
            }
        }
    }

    /// The turn may be over: voice-stt starts the final transcript on the audio so far (kept if no
    /// speech follows before the end of the turn).
    fn start_final_candidate(&mut self, last_speech: Instant) {
        let Some(u) = self.utterances.last_mut().filter(|u| u.timing.is_none()) else { return };
        let sent =
            u.stt.as_ref().is_some_and(|tx| tx.send(StreamingRecognizeRequest { request: Some(SttReq::FinalCandidate(FinalCandidate {})) }).is_ok());
        if sent {
            u.candidate = Some(last_speech);
        }
    }

    /// Ask the end-of-turn model about the pause after `last_speech`, off the loop's thread.
    fn judge_pause(&mut self, last_speech: Instant) {
        let (Some(model), Some(u)) = (self.shared.end_of_turn.clone(), self.utterances.last().filter(|u| u.timing.is_none())) else {
            // No model (or nothing being said): the pause ends the turn as a fixed silence would.
            let _ = self.tx.send(Internal::TurnVerdict { last_speech, probability: Ok(1.0), took: Duration::ZERO });
            return;
        };
        // Only what the model reads leaves the loop (a long utterance holds up to 30 s).
        let tail = u.audio.len().saturating_sub(voice_smart_turn::WINDOW_SAMPLES);
        let audio = u.audio[tail..].to_vec();
        let report = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let probability = model.probability(&audio).map_err(|e| format!("{e:#}"));
            let _ = report.send(Internal::TurnVerdict { last_speech, probability, took: t.elapsed() });
        });
    }

    async fn on_verdict(&mut self, last_speech: Instant, probability: Result<f32, String>, took: Duration) {
        let m = self.shared.metrics.clone();
        let finished = match &probability {
            Ok(p) => *p > self.shared.config.turn_threshold,
            Err(e) => {
                // A failed decision must not leave the user waiting: end the turn.
                tracing::error!(error = %e, "end-of-turn model failed; ending the turn at the pause");
                true
            }
        };
        let verdict = if finished { self.detector.end_turn(last_speech) } else { Ok(None) };
        let outcome = match (&probability, finished, &verdict) {
            (_, true, Err(())) => "stale",
            (Err(_), _, _) => "error",
            (_, true, Ok(_)) => "complete",
            (_, false, _) => "incomplete",
        };
        if outcome == "complete" {
            self.start_final_candidate(last_speech);
        }
        let ended = verdict.ok().flatten();
        m.end_of_turn_decisions.with_label_values(&[outcome]).inc();
        if !took.is_zero() {
            m.end_of_turn_model.observe(took.as_secs_f64());
        }
        tracing::debug!(room = %self.status.room, outcome, probability = ?probability, took_ms = took.as_secs_f64() * 1e3, "end-of-turn decision");
        if let Some(ev) = ended {
            self.on_turn_event(ev).await;
        }
    }

    async fn on_turn_event(&mut self, ev: TurnEvent) {
        match ev {
            TurnEvent::Onset => {
                let id = self.next_id();
                let audio: Vec<i16> = self.preroll.iter().copied().collect();
                let u = self.open_utterance(id, audio);
                self.utterances.push(u);
            }
            TurnEvent::Interrupting => {
                if let Some(r) = &self.reply {
                    if !r.paused() {
                        // Barge-in: what is queued goes now, the reply waits for the verdict
                        // (the final transcript: words -> cancel, a backchannel -> resume).
                        let t = Instant::now();
                        self.out.flush();
                        let _ = r.pause.send(true);
                        self.shared.metrics.barge_in_flush.observe(t.elapsed().as_secs_f64());
                        let turn = r.turn;
                        tracing::info!(room = %self.status.room, turn, "barge-in: agent audio flushed, reply paused");
                        self.set_state("listening", turn, true).await;
                    }
                }
            }
            TurnEvent::SilenceBegan { last_speech } if self.shared.end_of_turn.is_none() => self.start_final_candidate(last_speech),
            // With an end-of-turn model, the decision runs first (PauseToJudge, now) with the CPU to
            // itself: partials are held and the final transcript starts at "finished"
            // (on_verdict). Side by side with Whisper on two cores the model took 2-4x its 65 ms.
            TurnEvent::SilenceBegan { .. } => {
                if let Some(tx) = self.utterances.last().filter(|u| u.timing.is_none()).and_then(|u| u.stt.as_ref()) {
                    let _ = tx.send(StreamingRecognizeRequest { request: Some(SttReq::HoldPartials(HoldPartials {})) });
                }
            }
            TurnEvent::PauseToJudge { last_speech } => self.judge_pause(last_speech),
            TurnEvent::EndOfTurn { last_speech, .. } => {
                let now = Instant::now();
                let Some(u) = self.utterances.last_mut().filter(|u| u.timing.is_none()) else { return };
                u.timing = Some(TurnTiming { last_speech: Some(last_speech), end_of_turn: Some(now), ..Default::default() });
                // The candidate holds all the speech if none came after it.
                let keep_candidate = u.candidate == Some(last_speech);
                let eou = EndOfUtterance { keep_candidate };
                let streaming =
                    u.stt.as_ref().is_some_and(|tx| tx.send(StreamingRecognizeRequest { request: Some(SttReq::EndOfUtterance(eou)) }).is_ok());
                if !streaming {
                    let id = u.id;
                    self.transcribe_unary(id);
                }
            }
            TurnEvent::Discarded { .. } => {
                if let Some(pos) = self.utterances.iter().rposition(|u| u.timing.is_none()) {
                    let u = self.utterances.remove(pos);
                    u.task.abort();
                }
            }
        }
    }

    fn open_utterance(&self, id: u64, preroll: Vec<i16>) -> Utterance {
        let s = &self.shared.backends.settings;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = StreamingConfig {
            model: s.stt_model.clone(),
            language: s.language.clone(),
            sample_rate: INPUT_RATE,
            interim_results: s.partial_interval_ms > 0,
            partial_interval_ms: s.partial_interval_ms,
            ..Default::default()
        };
        let _ = tx.send(StreamingRecognizeRequest { request: Some(SttReq::Config(config)) });
        let _ = tx.send(StreamingRecognizeRequest { request: Some(SttReq::Audio(AudioChunk { pcm: to_bytes(&preroll) })) });
        let mut client = self.shared.backends.stt.clone();
        let report = self.tx.clone();
        let task = tokio::spawn(async move {
            let failed = |error: String| Internal::SttStreamFailed { utterance: id, error };
            let mut stream = match client.streaming_recognize(UnboundedReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let _ = report.send(failed(e.message().to_string()));
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(r)) if r.is_final => {
                        let _ = report.send(Internal::SttFinal { utterance: id, text: r.text.trim().to_string() });
                        return;
                    }
                    Ok(Some(r)) => {
                        let _ = report.send(Internal::SttPartial { utterance: id, text: r.text.trim().to_string() });
                    }
                    Ok(None) => {
                        let _ = report.send(failed("the stream ended without a final transcript".into()));
                        return;
                    }
                    Err(e) => {
                        let _ = report.send(failed(e.message().to_string()));
                        return;
                    }
                }
            }
        });
        Utterance { id, audio: preroll, stt: Some(tx), task, candidate: None, timing: None }
    }

    /// The fallback when streaming failed: the whole utterance in one call, with retries.
    fn transcribe_unary(&mut self, id: u64) {
        let Some(u) = self.utterances.iter_mut().find(|u| u.id == id) else { return };
        let b = self.shared.backends.clone();
        let samples: Vec<f32> = u.audio.iter().map(|&s| voice_runtime::audio::s16_to_f32(s)).collect();
        let wav = voice_runtime::audio::encode_wav(&samples, INPUT_RATE, 1, false);
        let report = self.tx.clone();
        u.task = tokio::spawn(async move {
            let s = &b.settings;
            let res = retry("voice-stt", s.retries, || {
                let mut c = b.stt.clone();
                let mut req = tonic::Request::new(TranscribeRequest {
                    audio: wav.clone(),
                    model: s.stt_model.clone(),
                    language: s.language.clone(),
                    ..Default::default()
                });
                req.set_timeout(s.call_timeout);
                async move { c.transcribe(req).await }
            })
            .await;
            let _ = report.send(match res {
                Ok(r) => Internal::SttFinal { utterance: id, text: r.into_inner().text.trim().to_string() },
                Err(e) => Internal::SttFailed { utterance: id, error: e.message().to_string() },
            });
        });
    }

    async fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::SttPartial { utterance, text } => {
                if !text.is_empty() {
                    self.send(TOPIC_TRANSCRIPT, json!({"turn": utterance, "role": "user", "text": text, "final": false})).await;
                }
            }
            Internal::SttStreamFailed { utterance, error } => {
                tracing::warn!(utterance, error = %error, "streaming speech-to-text failed; will transcribe the utterance in one call");
                let Some(u) = self.utterances.iter_mut().find(|u| u.id == utterance) else { return };
                u.stt = None;
                if u.timing.is_some() {
                    self.transcribe_unary(utterance);
                }
            }
            Internal::SttFailed { utterance, error } => {
                self.shared.metrics.backend_errors.with_label_values(&["stt"]).inc();
                tracing::error!(utterance, error = %error, "speech-to-text unavailable");
                let Some(pos) = self.utterances.iter().position(|u| u.id == utterance) else { return };
                let u = self.utterances.remove(pos);
                self.shared.metrics.turns.with_label_values(&["failed"]).inc();
                if let Some(r) = self.reply.take() {
                    self.stop_reply(r, true).await;
                }
                self.start_reply(utterance, String::new(), ReplySource::Fixed(SORRY_STT.into()), u.timing.unwrap_or_default()).await;
            }
            Internal::SttFinal { utterance, text } => self.on_final(utterance, text).await,
            Internal::TurnVerdict { last_speech, probability, took } => self.on_verdict(last_speech, probability, took).await,
            Internal::FirstAudio { turn } => {
                if let Some(r) = self.reply.as_mut().filter(|r| r.turn == turn) {
                    r.speaking = true;
                    if !r.paused() {
                        self.set_state("speaking", turn, false).await;
                    }
                }
            }
            Internal::Sentence { turn, text } => {
                self.send(TOPIC_TRANSCRIPT, json!({"turn": turn, "role": "agent", "text": text, "final": false})).await;
            }
            Internal::Synthesized { turn } => {
                // The answer is all audio and the LLM is idle: read the history as it will be
                // once this exchange is in, while the user listens (the user's next question
                // then costs its own tokens only).
                let next = self.reply.as_ref().filter(|r| r.turn == turn && !r.user_text.is_empty()).map(|r| {
                    let mut next = self.memory.clone();
                    next.push(&r.user_text, &r.remembered_text(false));
                    next.history()
                });
                if let Some(history) = next {
                    self.warm_up(history);
                }
            }
            Internal::ReplyDone { turn, error } => {
                if let Some(r) = self.reply.take_if(|r| r.turn == turn) {
                    if let Some(e) = &error {
                        tracing::error!(turn, error = %e, "reply failed");
                    }
                    self.finish_reply(r, false, error.is_some()).await;
                }
            }
        }
    }

    async fn on_final(&mut self, utterance: u64, text: String) {
        let Some(pos) = self.utterances.iter().position(|u| u.id == utterance) else { return };
        if self.utterances[pos].timing.is_none() {
            // A final before our end of turn (the server's own limit): wait for ours.
            return;
        }
        let mut u = self.utterances.remove(pos);
        let mut timing = u.timing.take().unwrap_or_default();
        timing.transcript = Some(Instant::now());
        self.status.turns.fetch_add(1, Ordering::Relaxed);
        let backchannel = is_backchannel(&text);
        self.send(TOPIC_TRANSCRIPT, json!({"turn": utterance, "role": "user", "text": text, "final": true})).await;

        if let Some(r) = &self.reply {
            if backchannel {
                // "mhm" while the agent talks: a false interruption. Go on where it stopped.
                if r.paused() {
                    let _ = r.pause.send(false);
                    self.shared.metrics.interruptions.with_label_values(&["false"]).inc();
                    let turn = r.turn;
                    let speaking = r.speaking;
                    tracing::info!(room = %self.status.room, turn, heard = %text, "false interruption: resuming");
                    self.set_state(if speaking { "speaking" } else { "thinking" }, turn, false).await;
                }
                self.shared.metrics.turns.with_label_values(&["backchannel"]).inc();
                return;
            }
            let r = self.reply.take().expect("checked above");
            self.shared.metrics.interruptions.with_label_values(&["true"]).inc();
            self.stop_reply(r, true).await;
        } else if backchannel && text.chars().all(|c| !c.is_alphanumeric()) {
            self.shared.metrics.turns.with_label_values(&["empty"]).inc();
            self.set_state("listening", utterance, false).await;
            return;
        }
        self.shared.metrics.turns.with_label_values(&["answered"]).inc();
        let history = self.memory.history();
        self.start_reply(utterance, text, ReplySource::Llm(history), timing).await;
    }

    /// Stop a reply the user talked over: its audio, its LLM and TTS streams; remember what was said.
    async fn stop_reply(&mut self, r: Reply, interrupted: bool) {
        r.task.abort();
        self.out.flush();
        self.finish_reply(r, interrupted, false).await;
    }

    async fn finish_reply(&mut self, r: Reply, interrupted: bool, failed: bool) {
        let said = if interrupted { r.spoken_text() } else { r.full_text() };
        if !r.user_text.is_empty() {
            self.memory.push(&r.user_text, &r.remembered_text(interrupted));
            // Cheap when the history is what the warm-up after synthesis read; after a
            // barge-in it reads the history with the reply cut where the user stopped it.
            self.warm_up(self.memory.history());
        }
        self.send(TOPIC_TRANSCRIPT, json!({"turn": r.turn, "role": "agent", "text": said, "final": true, "interrupted": interrupted})).await;
        let timing = r.timing.lock().unwrap().clone();
        let report = timing.report(r.turn, interrupted);
        if let Some(rep) = &report {
            self.shared.metrics.observe(rep);
            self.send(TOPIC_METRICS, serde_json::to_value(rep).unwrap_or_default()).await;
            tracing::info!(
                room = %self.status.room,
                turn = rep.turn,
                end_of_utterance_ms = rep.end_of_utterance_ms,
                stt_final_ms = rep.stt_final_ms,
                rag_ms = rep.rag_ms,
                llm_ttft_ms = rep.llm_ttft_ms,
                first_sentence_ms = rep.first_sentence_ms,
                tts_ttfa_ms = rep.tts_ttfa_ms,
                publish_ms = rep.publish_ms,
                voice_to_voice_ms = rep.voice_to_voice_ms,
                interrupted,
                failed,
                user = %r.user_text,
                agent = %said,
                "turn"
            );
        } else {
            tracing::info!(room = %self.status.room, turn = r.turn, interrupted, failed, user = %r.user_text, agent = %said, "turn (no audio published)");
        }
        if !interrupted {
            self.set_state("listening", r.turn, false).await;
        }
    }

    /// Have voice-llm read `history` into its prefix cache (best effort: a failure costs only
    /// the next turn's prefill).
    fn warm_up(&mut self, history: Vec<voice_proto::llm::v1::ChatMessage>) {
        if let Some(w) = self.warm_up.take() {
            w.abort();
        }
        let b = self.shared.backends.clone();
        self.warm_up = Some(tokio::spawn(async move {
            if let Err(e) = b.prefill(history).await {
                tracing::debug!(error = %e.message(), "prefix-cache warm-up failed");
            }
        }));
    }

    async fn start_reply(&mut self, turn: u64, user_text: String, source: ReplySource, timing: TurnTiming) {
        self.set_state("thinking", turn, false).await;
        let (pause, pause_rx) = watch::channel(false);
        let timing = Arc::new(Mutex::new(timing));
        let sentences = Arc::new(Mutex::new(Vec::new()));
        let spoken = Arc::new(AtomicUsize::new(0));
        let generated = Arc::new(Mutex::new(String::new()));
        let job = ReplyJob {
            turn,
            user_text: user_text.clone(),
            source,
            shared: self.shared.clone(),
            out: self.out.clone(),
            report: self.tx.clone(),
            pause: pause_rx,
            timing: timing.clone(),
            sentences: sentences.clone(),
            spoken: spoken.clone(),
            generated: generated.clone(),
        };
        let task = tokio::spawn(job.run());
        self.reply = Some(Reply { turn, user_text, pause, task, timing, sentences, spoken, generated, speaking: false });
    }
}

pub(crate) fn to_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}
