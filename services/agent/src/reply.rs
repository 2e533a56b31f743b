//! One reply, as three concurrent stages: the text (voice-embed context, voice-llm tokens cut
//! into sentences, the first piece at a word boundary), the speech (voice-tts, one piece at a
//! time, streamed in chunks) and the playout (24 -> 48 kHz, 10 ms frames to the room, leading
//! silence skipped, playout gaps counted). It runs as a task of the conversation loop
//! (`conversation.rs`, the turn-taking side), reports back through the loop's channel and obeys
//! its pause switch (a barge-in pending).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use voice_runtime::audio::StreamResampler;

use crate::{
    conversation::{Internal, ReplySource, Shared},
    memory::reply_messages,
    metrics::TurnTiming,
    sentences::SentenceSplitter,
    transport::{AgentOutput, OUTPUT_FRAME, OUTPUT_RATE},
};

/// Said when voice-llm stays unreachable after the retries.
pub(crate) const SORRY_LLM: &str = "Sorry, I'm having trouble thinking right now. Please try again in a moment.";

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
pub(crate) struct ReplyJob {
    pub(crate) turn: u64,
    pub(crate) user_text: String,
    pub(crate) source: ReplySource,
    pub(crate) shared: Shared,
    pub(crate) out: Arc<dyn AgentOutput>,
    pub(crate) report: mpsc::UnboundedSender<Internal>,
    pub(crate) pause: watch::Receiver<bool>,
    pub(crate) timing: Arc<Mutex<TurnTiming>>,
    pub(crate) sentences: Arc<Mutex<Vec<String>>>,
    pub(crate) spoken: Arc<AtomicUsize>,
    pub(crate) generated: Arc<Mutex<String>>,
}

impl ReplyJob {
    fn mark(&self, f: impl FnOnce(&mut TurnTiming) -> &mut Option<Instant>) {
        let mut t = self.timing.lock().unwrap();
        let slot = f(&mut t);
        if slot.is_none() {
            *slot = Some(Instant::now());
        }
    }

    pub(crate) async fn run(self) {
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
