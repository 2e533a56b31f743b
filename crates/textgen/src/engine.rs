//! The scheduler: one thread owns the model and serves every active sequence in turn, one step
//! each (a prompt chunk or one token), so a long answer never holds the others back. Requests
//! wait in a bounded queue; a full queue is refused at once. A sequence whose client went away
//! (its event receiver dropped, or the cancel flag set) is dropped at its next step.
//!
//! Finished and cancelled sequences go to the [`PrefixCache`]: a new request starts from the
//! longest token prefix it shares with one of them and prefills only the rest.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc as tmpsc;

use crate::{
    model::{LoadedModel, Sequence},
    prefix_cache::PrefixCache,
    sampling::{Sampler, SamplingParams},
    text::{IncrementalDecoder, StopMatcher, StopOutcome},
};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded in turn at the same time.
    pub max_batch: usize,
    /// Requests allowed to wait for a slot; more are refused.
    pub max_queue: usize,
    /// Prompt tokens fed per turn, so a long prompt does not stall the other sequences.
    pub prefill_chunk: usize,
    /// K/V bytes kept from finished and cancelled sequences for prefix reuse (0: no reuse).
    /// Only models whose caches can be cut back use it ([`LoadedModel::reuses_prefixes`]).
    pub prefix_cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_batch: 8, max_queue: 32, prefill_chunk: 256, prefix_cache_bytes: 256 << 20 }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache (not computed again).
    pub cached_tokens: usize,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// New text (never splits a UTF-8 character, never contains a stop string).
    Text(String),
    Done {
        reason: FinishReason,
        usage: Usage,
        time_to_first_token: Option<Duration>,
    },
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full")]
    QueueFull,
    #[error("the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context of {context} tokens")]
    ContextTooLong { prompt: usize, max_tokens: usize, context: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the engine has stopped")]
    Stopped,
}

/// Hooks for metrics, so this crate needs no metrics library.
pub trait EngineObserver: Send + Sync {
    fn first_token(&self, _ttft: Duration) {}
    fn token(&self, _since_previous: Duration) {}
    fn finished(&self, _usage: Usage, _decode_secs: f64) {}
    fn cancelled(&self) {}
    fn active(&self, _n: usize) {}
    fn queued(&self, _n: usize) {}
    /// A sequence was admitted: `reused` prompt tokens came from the prefix cache, `prefilled`
    /// are fed now.
    fn prompt(&self, _reused: usize, _prefilled: usize) {}
    /// What the prefix cache holds after a change.
    fn prefix_cache(&self, _tokens: usize, _entries: usize) {}
}

struct NoObserver;
impl EngineObserver for NoObserver {}

/// A submitted generation. Dropping it cancels the generation.
pub struct Handle {
    pub events: tmpsc::UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl Handle {
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

struct Job {
    req: GenerateRequest,
    /// Only read the prompt into the prefix cache; generate nothing.
    prefill_only: bool,
    events: tmpsc::UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    enqueued: Instant,
}

pub struct Engine {
    tx: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
    cfg: EngineConfig,
    pub model: Arc<LoadedModel>,
    observer: Arc<dyn EngineObserver>,
}

impl Engine {
    pub fn start(model: Arc<LoadedModel>, cfg: EngineConfig, observer: Option<Arc<dyn EngineObserver>>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let observer: Arc<dyn EngineObserver> = observer.unwrap_or_else(|| Arc::new(NoObserver));
        let mut worker_cfg = cfg.clone();
        if !model.parallel_sequences() {
            worker_cfg.max_batch = 1;
        }
        let budget = if model.reuses_prefixes() { (cfg.prefix_cache_bytes / model.info.kv_bytes_per_token.max(1)) as usize } else { 0 };
        let worker = Worker {
            model: model.clone(),
            cfg: worker_cfg,
            pending: pending.clone(),
            observer: observer.clone(),
            cache: std::cell::RefCell::new(PrefixCache::new(budget)),
        };
        std::thread::Builder::new().name("textgen-scheduler".into()).spawn(move || worker.run(rx)).expect("spawning the scheduler thread");
        Self { tx, pending, cfg, model, observer }
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub fn submit(&self, req: GenerateRequest) -> Result<Handle, SubmitError> {
        self.enqueue(req, false)
    }

    /// Read `prompt_tokens` into the prefix cache and generate nothing: the handle's only event
    /// is `Done` (completion_tokens 0) once they are in. A client warms the cache with what its
    /// next request will start with (a conversation's history while the user talks).
    pub fn prefill(&self, prompt_tokens: Vec<u32>) -> Result<Handle, SubmitError> {
        self.enqueue(GenerateRequest { prompt_tokens, params: SamplingParams { max_tokens: 0, ..Default::default() } }, true)
    }

    fn enqueue(&self, req: GenerateRequest, prefill_only: bool) -> Result<Handle, SubmitError> {
        let context = self.model.info.context_length;
        if req.prompt_tokens.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.prompt_tokens.len() + req.params.max_tokens > context {
            return Err(SubmitError::ContextTooLong { prompt: req.prompt_tokens.len(), max_tokens: req.params.max_tokens, context });
        }
        // Reserve a queue place first so concurrent submitters cannot overshoot the bound.
        let before = self.pending.fetch_add(1, Ordering::SeqCst);
        if before >= self.cfg.max_queue {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull);
        }
        self.observer.queued(before + 1);
        let (etx, erx) = tmpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job { req, prefill_only, events: etx, cancel: cancel.clone(), enqueued: Instant::now() };
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(Handle { events: erx, cancel })
    }
}

struct Active {
    job: Job,
    seq: Sequence,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// Prompt tokens not fed yet.
    prefill_from: usize,
    /// Prompt tokens the prefix cache supplied.
    reused: usize,
    context: Vec<u32>,
    generated: usize,
    last_token: Option<u32>,
    first_token_at: Option<Instant>,
    last_token_at: Instant,
    done: bool,
    /// False after an error: the sequence's cache may be inconsistent, it is not reused.
    reusable: bool,
}

struct Worker {
    model: Arc<LoadedModel>,
    cfg: EngineConfig,
    pending: Arc<AtomicUsize>,
    observer: Arc<dyn EngineObserver>,
    /// Only the scheduler thread touches it.
    cache: std::cell::RefCell<PrefixCache>,
}

impl Worker {
    fn admit(&self, job: Job, active: &mut Vec<Active>) {
        let n = self.pending.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        self.observer.queued(n);
        let reuse = self.cache.borrow_mut().take(&job.req.prompt_tokens);
        let (seq, reused) = match reuse {
            Some(r) => (r.seq, r.tokens),
            None => match self.model.new_sequence() {
                Ok(s) => (s, 0),
                Err(e) => {
                    let _ = job.events.send(Event::Error(format!("could not start a sequence: {e:#}")));
                    return;
                }
            },
        };
        self.observer.prompt(reused, job.req.prompt_tokens.len() - reused);
        let cache = self.cache.borrow();
        self.observer.prefix_cache(cache.tokens(), cache.entries());
        drop(cache);
        let stops = StopMatcher::new(job.req.params.stop.clone());
        let sampler = Sampler::new(job.req.params.clone());
        let context = job.req.prompt_tokens.clone();
        active.push(Active {
            seq,
            sampler,
            decoder: IncrementalDecoder::new(),
            stops,
            prefill_from: reused,
            reused,
            context,
            generated: 0,
            last_token: None,
            first_token_at: None,
            last_token_at: Instant::now(),
            done: false,
            reusable: true,
            job,
        });
    }

    fn run(self, rx: mpsc::Receiver<Job>) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            while active.len() < self.cfg.max_batch.max(1) {
                match rx.try_recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if active.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            if active.is_empty() {
                match rx.recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(_) => return,
                }
                continue;
            }
            self.observer.active(active.len());
            self.turn(&mut active);
            self.retire(&mut active);
            self.observer.active(active.len());
        }
    }

    /// Take the finished and cancelled sequences out of `active`; their caches go to the prefix
    /// cache with the tokens they were computed from.
    fn retire(&self, active: &mut Vec<Active>) {
        let mut i = 0;
        let mut changed = false;
        while i < active.len() {
            if !active[i].done {
                i += 1;
                continue;
            }
            let a = active.swap_remove(i);
            if a.reusable && self.model.reuses_prefixes() {
                let fed = a.seq.pos.min(a.context.len());
                self.cache.borrow_mut().put(a.context[..fed].to_vec(), a.seq);
                changed = true;
            }
        }
        if changed {
            let cache = self.cache.borrow();
            self.observer.prefix_cache(cache.tokens(), cache.entries());
        }
    }

    fn finish(&self, a: &mut Active, reason: FinishReason) {
        let tok = &self.model.tokenizer;
        let mut tail = a.decoder.flush(tok).unwrap_or_default();
        if reason == FinishReason::Length || !tail.is_empty() {
            match a.stops.push(&tail) {
                StopOutcome::Emit(t) => tail = t + &a.stops.finish(),
                StopOutcome::Stop(t) => tail = t,
            }
        } else {
            tail = a.stops.finish();
        }
        if !tail.is_empty() {
            let _ = a.job.events.send(Event::Text(tail));
        }
        let usage = Usage { prompt_tokens: a.job.req.prompt_tokens.len(), completion_tokens: a.generated, cached_tokens: a.reused };
        let decode_secs = a.first_token_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.observer.finished(usage, decode_secs);
        let _ = a.job.events.send(Event::Done { reason, usage, time_to_first_token: a.first_token_at.map(|t| t - a.job.enqueued) });
        a.done = true;
    }

    /// One turn: every sequence still reading its prompt feeds one chunk; every sequence that is
    /// generating gets one token, all in one pass over the weights when the model batches.
    fn turn(&self, active: &mut [Active]) {
        let mut decoding: Vec<usize> = Vec::new();
        for (i, a) in active.iter_mut().enumerate() {
            if a.job.cancel.load(Ordering::SeqCst) || a.job.events.is_closed() {
                self.observer.cancelled();
                a.done = true;
                continue;
            }
            let prompt_len = a.job.req.prompt_tokens.len();
            if a.prefill_from < prompt_len {
                let end = (a.prefill_from + self.cfg.prefill_chunk.max(1)).min(prompt_len);
                let r = a.seq.forward(&a.job.req.prompt_tokens[a.prefill_from..end]);
                a.prefill_from = end;
                match r {
                    Ok(_) if end == prompt_len && a.job.prefill_only => self.finish_without_flush(a),
                    Ok(logits) if end == prompt_len => self.after_logits(a, logits),
                    Ok(_) => {}
                    Err(e) => self.fail(a, e),
                }
            } else {
                decoding.push(i);
            }
        }
        if decoding.is_empty() {
            return;
        }
        let tokens: Vec<[u32; 1]> = decoding.iter().map(|&i| [active[i].last_token.expect("a token follows the prompt")]).collect();
        let token_refs: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
        if self.model.batches() && decoding.len() > 1 {
            let mut seqs: Vec<&mut Sequence> = Vec::with_capacity(decoding.len());
            // Disjoint mutable borrows of the decoding sequences.
            let mut rest: &mut [Active] = active;
            let mut offset = 0;
            for &i in &decoding {
                let (_, tail) = rest.split_at_mut(i - offset);
                let (head, tail) = tail.split_at_mut(1);
                seqs.push(&mut head[0].seq);
                rest = tail;
                offset = i + 1;
            }
            match self.model.forward_batch(&mut seqs, &token_refs) {
                Ok(all) => {
                    for (&i, logits) in decoding.iter().zip(all) {
                        self.after_logits(&mut active[i], logits);
                    }
                }
                Err(e) => {
                    for &i in &decoding {
                        self.fail(&mut active[i], anyhow::anyhow!("{e:#}"));
                    }
                }
            }
        } else {
            for (&i, t) in decoding.iter().zip(&token_refs) {
                let a = &mut active[i];
                match a.seq.forward(t) {
                    Ok(logits) => self.after_logits(a, logits),
                    Err(e) => self.fail(a, e),
                }
            }
        }
    }

    fn fail(&self, a: &mut Active, e: anyhow::Error) {
        let _ = a.job.events.send(Event::Error(format!("{e:#}")));
        a.done = true;
        a.reusable = false;
    }

    /// Sample from a sequence's logits and emit what it produced.
    fn after_logits(&self, a: &mut Active, mut logits: Vec<f32>) {
        let token = a.sampler.sample(&mut logits, &a.context);
        let now = Instant::now();
        if a.first_token_at.is_none() {
            a.first_token_at = Some(now);
            self.observer.first_token(now - a.job.enqueued);
        } else {
            self.observer.token(now - a.last_token_at);
        }
        a.last_token_at = now;
        let tok = &self.model.tokenizer;
        if tok.stop_tokens.contains(&token) {
            self.finish(a, FinishReason::Stop);
            return;
        }
        a.generated += 1;
        a.context.push(token);
        a.last_token = Some(token);
        let text = match a.decoder.push(tok, token) {
            Ok(t) => t,
            Err(e) => return self.fail(a, e),
        };
        if !text.is_empty() {
            match a.stops.push(&text) {
                StopOutcome::Emit(t) => {
                    if !t.is_empty() {
                        let _ = a.job.events.send(Event::Text(t));
                    }
                }
                StopOutcome::Stop(t) => {
                    if !t.is_empty() {
                        let _ = a.job.events.send(Event::Text(t));
                    }
                    self.finish_without_flush(a);
                    return;
                }
            }
        }
        if a.generated >= a.job.req.params.max_tokens || a.seq.pos + 1 >= self.model.info.context_length {
            self.finish(a, FinishReason::Length);
        }
    }

    /// A stop string ended the text (nothing held back is emitted), or a prefill finished.
    fn finish_without_flush(&self, a: &mut Active) {
        let usage = Usage { prompt_tokens: a.job.req.prompt_tokens.len(), completion_tokens: a.generated, cached_tokens: a.reused };
        let decode_secs = a.first_token_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.observer.finished(usage, decode_secs);
        let _ =
            a.job.events.send(Event::Done { reason: FinishReason::Stop, usage, time_to_first_token: a.first_token_at.map(|t| t - a.job.enqueued) });
        a.done = true;
    }
}
