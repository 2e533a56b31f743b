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
use voice_runtime::audio::StreamResampler;

use crate::{
    backends::{retry, Backends},
    end_of_turn::EndOfTurnModel,
    memory::{reply_messages, Memory},
    metrics::{AgentMetrics, TurnTiming},
    sentences::SentenceSplitter,
    transport::{AgentOutput, TransportEvent, INPUT_RATE, OUTPUT_FRAME, OUTPUT_RATE},
    turn::{is_backchannel, EndReason, TurnConfig, TurnDetector, TurnEvent},
    vad::Vad,
};

/// Said when a backend stays unreachable after the retries.
const SORRY_LLM: &str = "Sorry, I'm having trouble thinking right now. Please try again in a moment.";
const SORRY_STT: &str = "Sorry, I didn't catch that. I'm having trouble hearing right now.";

/// The reply's leading silence ends at the first 10 ms window louder than -50 dBFS RMS; 20 ms
/// before it are kept so a soft onset (an "f", an "h") is not clipped.
const LEAD_WINDOW_MS: u32 = 10;
const LEAD_SILENCE_RMS: f32 = 0.003;
const LEAD_KEEP_MS: u32 = 20;
/// Input samples per step of the TTS audio's resampler: 256 at 24 kHz holds back at most
/// ~11 ms of a chunk until the next one (or the piece's end) arrives.
const RESAMPLER_BLOCK: usize = 256;
/// Lateness of a frame not counted as a playout gap (task scheduling, timer granularity).
const PLAYOUT_JITTER: Duration = Duration::from_millis(5);

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
enum Internal {
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

enum ReplySource {
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

fn to_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Wait while the reply is paused (barge-in pending).
async fn unpaused(rx: &mut watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            // The loop dropped the reply: wait to be aborted.
            std::future::pending::<()>().await;
        }
    }
}

/// One reply: retrieval, generation, synthesis and playout as three concurrent stages.
struct ReplyJob {
    turn: u64,
    user_text: String,
    source: ReplySource,
    shared: Shared,
    out: Arc<dyn AgentOutput>,
    report: mpsc::UnboundedSender<Internal>,
    pause: watch::Receiver<bool>,
    timing: Arc<Mutex<TurnTiming>>,
    sentences: Arc<Mutex<Vec<String>>>,
    spoken: Arc<AtomicUsize>,
    generated: Arc<Mutex<String>>,
}

impl ReplyJob {
    fn mark(&self, f: impl FnOnce(&mut TurnTiming) -> &mut Option<Instant>) {
        let mut t = self.timing.lock().unwrap();
        let slot = f(&mut t);
        if slot.is_none() {
            *slot = Some(Instant::now());
        }
    }

    async fn run(self) {
        let (sent_tx, sent_rx) = mpsc::unbounded_channel::<(usize, String)>();
        let (frames_tx, frames_rx) = mpsc::unbounded_channel::<(usize, Vec<i16>)>();
        let job = Arc::new(self);
        let speech = {
            let job = job.clone();
            async move {
                let r = job.clone().speech(sent_rx, frames_tx).await;
                let _ = job.report.send(Internal::Synthesized { turn: job.turn });
                r
            }
        };
        let (text_res, tts_res, play_res) = tokio::join!(job.clone().text(sent_tx), speech, job.clone().playout(frames_rx));
        let error = [text_res.err(), tts_res.err(), play_res.err()].into_iter().flatten().next();
        let _ = job.report.send(Internal::ReplyDone { turn: job.turn, error });
    }

    /// Stage 1: the text, sentence by sentence.
    async fn text(self: Arc<Self>, sent_tx: mpsc::UnboundedSender<(usize, String)>) -> Result<(), String> {
        let push = |s: String| {
            let mut all = self.sentences.lock().unwrap();
            all.push(s.clone());
            let _ = sent_tx.send((all.len() - 1, s));
        };
        let messages = match &self.source {
            ReplySource::Fixed(text) => {
                self.mark(|t| &mut t.transcript);
                self.mark(|t| &mut t.context);
                self.mark(|t| &mut t.first_token);
                self.mark(|t| &mut t.first_sentence);
                push(text.clone());
                return Ok(());
            }
            ReplySource::Llm(history) => history.clone(),
        };
        let b = &self.shared.backends;
        let mut pause = self.pause.clone();
        // Retrieval: failure is not fatal, the answer goes on without passages.
        let context = match b.context(&self.user_text).await {
            Ok(ctx) => ctx,
            Err(e) => {
                self.shared.metrics.backend_errors.with_label_values(&["embed"]).inc();
                tracing::warn!(error = %e.message(), "retrieval failed; answering without context");
                None
            }
        };
        let messages = reply_messages(messages, context.as_deref(), &self.user_text);
        self.mark(|t| &mut t.context);
        let mut stream = match b.generate(messages).await {
            Ok(s) => s,
            Err(e) => {
                self.shared.metrics.backend_errors.with_label_values(&["llm"]).inc();
                self.mark(|t| &mut t.first_token);
                self.mark(|t| &mut t.first_sentence);
                push(SORRY_LLM.into());
                return Err(format!("voice-llm: {}", e.message()));
            }
        };
        let mut splitter = SentenceSplitter::new(self.shared.config.first_clause_words);
        loop {
            unpaused(&mut pause).await;
            match stream.message().await {
                Ok(Some(r)) => {
                    if !r.text.is_empty() {
                        self.mark(|t| &mut t.first_token);
                        self.generated.lock().unwrap().push_str(&r.text);
                    }
                    if r.done {
                        let mut t = self.timing.lock().unwrap();
                        t.llm_prompt_tokens = Some(r.prompt_tokens);
                        t.llm_cached_tokens = Some(r.cached_prompt_tokens);
                    }
                    for s in splitter.push(&r.text) {
                        self.mark(|t| &mut t.first_sentence);
                        push(s);
                    }
                    if r.done {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.shared.metrics.backend_errors.with_label_values(&["llm"]).inc();
                    if self.sentences.lock().unwrap().is_empty() {
                        self.mark(|t| &mut t.first_token);
                        self.mark(|t| &mut t.first_sentence);
                        push(SORRY_LLM.into());
                    }
                    return Err(format!("voice-llm stream: {}", e.message()));
                }
            }
        }
        if let Some(s) = splitter.finish() {
            self.mark(|t| &mut t.first_token);
            self.mark(|t| &mut t.first_sentence);
            push(s);
        }
        Ok(())
    }

    /// Stage 2: each sentence to audio, 48 kHz 10 ms frames.
    /// A barge-in pauses it before the next sentence (the one being synthesized finishes): the
    /// CPU goes to hearing the user, which is what decides whether the reply goes on at all.
    async fn speech(
        self: Arc<Self>,
        mut sent_rx: mpsc::UnboundedReceiver<(usize, String)>,
        frames_tx: mpsc::UnboundedSender<(usize, Vec<i16>)>,
    ) -> Result<(), String> {
        let mut pause = self.pause.clone();
        let mut failure = None;
        while let Some((idx, text)) = sent_rx.recv().await {
            unpaused(&mut pause).await;
            let mut stream = match self.shared.backends.synthesize(&text).await {
                Ok(s) => s,
                Err(e) => {
                    self.shared.metrics.backend_errors.with_label_values(&["tts"]).inc();
                    failure = Some(format!("voice-tts: {}", e.message()));
                    continue;
                }
            };
            let mut carry: Vec<i16> = Vec::with_capacity(OUTPUT_FRAME * 2);
            let mut resampler: Option<StreamResampler> = None;
            let mut announced = false;
            // The voice starts with a few hundred ms of silence: before the reply's first words
            // that is pure wait for the listener, so it is skipped (the pauses between sentences
            // are left as the voice made them).
            let mut lead = (idx == 0).then(Vec::<f32>::new);
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) if !chunk.pcm.is_empty() => {
                        let rate = if chunk.sample_rate == 0 { 24_000 } else { chunk.sample_rate };
                        let mut samples = voice_runtime::audio::s16le_to_f32(&chunk.pcm);
                        if let Some(mut quiet) = lead.take() {
                            quiet.append(&mut samples);
                            let ms = |n: u32| (rate * n / 1000) as usize;
                            match voice_runtime::audio::sound_onset(&quiet, ms(LEAD_WINDOW_MS), LEAD_SILENCE_RMS) {
                                Some(at) => samples = quiet.split_off(at.saturating_sub(ms(LEAD_KEEP_MS))),
                                None => {
                                    // All quiet so far: keep only what could be the onset's lead-in.
                                    quiet.drain(..quiet.len().saturating_sub(ms(LEAD_KEEP_MS)));
                                    lead = Some(quiet);
                                    continue;
                                }
                            }
                        }
                        self.mark(|t| &mut t.first_audio);
                        if !announced {
                            announced = true;
                            let _ = self.report.send(Internal::Sentence { turn: self.turn, text: text.clone() });
                        }
                        // One resampler for the piece's chunks: its filter state runs across
                        // the joins (fresh resampling per chunk filters each edge against
                        // silence, a click at every join).
                        if resampler.is_none() {
                            resampler =
                                Some(StreamResampler::new(rate, OUTPUT_RATE, RESAMPLER_BLOCK).map_err(|e| format!("resampling TTS audio: {e}"))?);
                        }
                        let up = resampler.as_mut().expect("made above").push(&samples).map_err(|e| format!("resampling TTS audio: {e}"))?;
                        carry.extend(up.iter().map(|&v| voice_runtime::audio::f32_to_s16(v)));
                        let whole = carry.len() / OUTPUT_FRAME * OUTPUT_FRAME;
                        for f in carry[..whole].chunks_exact(OUTPUT_FRAME) {
                            let _ = frames_tx.send((idx, f.to_vec()));
                        }
                        carry.drain(..whole);
                    }
                    Ok(Some(chunk)) if chunk.done => break,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        self.shared.metrics.backend_errors.with_label_values(&["tts"]).inc();
                        failure = Some(format!("voice-tts stream: {}", e.message()));
                        break;
                    }
                }
            }
            if let Some(mut r) = resampler.take() {
                let rest = r.finish().map_err(|e| format!("resampling TTS audio: {e}"))?;
                carry.extend(rest.iter().map(|&v| voice_runtime::audio::f32_to_s16(v)));
            }
            for f in carry.chunks(OUTPUT_FRAME) {
                let mut f = f.to_vec();
                f.resize(OUTPUT_FRAME, 0);
                let _ = frames_tx.send((idx, f));
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Stage 3: frames to the room at the transport's pace. On a pause (barge-in) the frames
    /// the transport had queued were flushed unheard: keep them to play again on resume.
    async fn playout(self: Arc<Self>, mut frames_rx: mpsc::UnboundedReceiver<(usize, Vec<i16>)>) -> Result<(), String> {
        let mut pause = self.pause.clone();
        let mut pending: VecDeque<(usize, Vec<i16>)> = VecDeque::new();
        let mut recent: VecDeque<(usize, Vec<i16>)> = VecDeque::new();
        let keep = (self.out.queue_ms() as usize / 10).max(1);
        let mut first = true;
        let mut closed = false;
        let mut heard_until: Option<Instant> = None;
        loop {
            if *pause.borrow_and_update() {
                for f in recent.drain(..).rev() {
                    pending.push_front(f);
                }
                unpaused(&mut pause).await;
                heard_until = None;
            }
            let frame = match pending.pop_front() {
                Some(f) => f,
                // Everything is queued: the reply is over once the user has heard it (or a
                // barge-in flushed the tail, which then plays again on resume).
                None if closed => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.out.queue_ms() as u64)) => break,
                    _ = pause.changed() => continue,
                },
                None => tokio::select! {
                    f = frames_rx.recv() => match f { Some(f) => f, None => { closed = true; continue } },
                    _ = pause.changed() => continue,
                },
            };
            // The listener hears the frames back to back from the first on; a frame that comes
            // after the audio before it has run out is a stall they hear.
            let ready = Instant::now();
            if let Some(until) = heard_until {
                if ready > until + PLAYOUT_JITTER {
                    self.shared.metrics.playout_gap.observe((ready - until).as_secs_f64());
                }
            }
            heard_until = Some(heard_until.map_or(ready, |u| u.max(ready)) + Duration::from_millis(10));
            self.out.push_frame(frame.1.clone()).await.map_err(|e| format!("publishing audio: {e}"))?;
            if *pause.borrow() {
                // Paused while we waited for room: this frame went into a flushed queue.
                self.out.flush();
            }
            if first {
                first = false;
                self.mark(|t| &mut t.published);
                let _ = self.report.send(Internal::FirstAudio { turn: self.turn });
            }
            self.spoken.fetch_max(frame.0 + 1, Ordering::SeqCst);
            recent.push_back(frame);
            if recent.len() > keep {
                recent.pop_front();
            }
        }
        Ok(())
    }
}
