//! Dynamic batching by token budget, as text-embeddings-inference does.
//!
//! Requests queue up while the model is busy. When it is free, the worker takes everything
//! waiting, sorts the inputs by length (so short ones are not padded to a long one's length) and
//! runs them in batches whose padded size (`items x longest`) stays within `max_batch_tokens`.
//! One worker thread owns the model calls: the encoder is compute bound, and two batches at once
//! would only fight over the same cores.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Instant,
};

use tokio::sync::oneshot;

use crate::model::Encoded;

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Padded tokens per model call (items x longest item).
    pub max_batch_tokens: usize,
    /// Inputs per model call.
    pub max_batch_items: usize,
    /// Requests allowed to wait; beyond this `embed` answers [`EmbedError::Overloaded`].
    pub max_queue: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self { max_batch_tokens: 16384, max_batch_items: 64, max_queue: 256 }
    }
}

#[derive(Debug)]
pub enum EmbedError {
    /// The queue is full: retry later (HTTP 429).
    Overloaded,
    /// The worker is gone (shutting down).
    Closed,
    /// The model failed on this batch.
    Model(String),
}

impl std::fmt::Display for EmbedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedError::Overloaded => write!(f, "the embedding queue is full"),
            EmbedError::Closed => write!(f, "the embedding worker has stopped"),
            EmbedError::Model(m) => write!(f, "embedding failed: {m}"),
        }
    }
}

impl std::error::Error for EmbedError {}

/// Told about every model call, for metrics.
pub trait BatchObserver: Send + Sync {
    /// `items` inputs with `tokens` real tokens, padded to `padded_tokens`, took `seconds`.
    fn batch(&self, items: usize, tokens: usize, padded_tokens: usize, seconds: f64);
}

type RunBatch = dyn Fn(&[&Encoded]) -> anyhow::Result<Vec<Vec<f32>>> + Send + Sync;

struct Job {
    items: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// The queue in front of the model. Clone freely.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    pub config: BatcherConfig,
}

impl Batcher {
    /// Start the worker thread. `run` embeds one batch (it is where device fallback lives).
    pub fn start(
        run: impl Fn(&[&Encoded]) -> anyhow::Result<Vec<Vec<f32>>> + Send + Sync + 'static,
        config: BatcherConfig,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(config.max_queue.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let worker_depth = depth.clone();
        let cfg = config.clone();
        let run: Box<RunBatch> = Box::new(run);
        std::thread::Builder::new()
            .name("embed-batcher".into())
            .spawn(move || worker(rx, run, cfg, observer, worker_depth))
            .expect("spawning the embedding worker thread");
        Self { tx, depth, config }
    }

    /// Requests waiting or running.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Embed `items`; the vectors come back in the same order.
    pub async fn embed(&self, items: Vec<Encoded>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job { items, reply }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(EmbedError::Overloaded);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(EmbedError::Closed);
            }
        }
        rx.await.unwrap_or(Err(EmbedError::Closed))
    }

    /// Blocking form, for callers outside an async runtime (benchmarks, tests).
    pub fn embed_blocking(&self, items: Vec<Encoded>) -> Result<Vec<Vec<f32>>, EmbedError> {
        block_on(self.embed(items))
    }
}

/// Run a future to completion on this thread (the batcher's reply is a oneshot; no runtime needed).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn worker(rx: mpsc::Receiver<Job>, run: Box<RunBatch>, cfg: BatcherConfig, observer: Option<Arc<dyn BatchObserver>>, depth: Arc<AtomicUsize>) {
    while let Ok(first) = rx.recv() {
        // Everything that queued while the previous round ran goes into this round, up to a few
        // batches' worth so one huge burst does not delay the replies to its first requests.
        let mut jobs = vec![first];
        let mut queued_tokens: usize = jobs[0].items.iter().map(|e| e.ids.len()).sum();
        while queued_tokens < cfg.max_batch_tokens * 4 {
            match rx.try_recv() {
                Ok(job) => {
                    queued_tokens += job.items.iter().map(|e| e.ids.len()).sum::<usize>();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let round = jobs.len();
        // A client that went away does not cost a model call.
        jobs.retain(|j| !j.reply.is_closed());

        let mut order: Vec<(usize, usize)> = jobs.iter().enumerate().flat_map(|(j, job)| (0..job.items.len()).map(move |i| (j, i))).collect();
        order.sort_by_key(|&(j, i)| std::cmp::Reverse(jobs[j].items[i].ids.len()));

        let mut results: Vec<Vec<Option<Vec<f32>>>> = jobs.iter().map(|j| vec![None; j.items.len()]).collect();
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first, so the first item of a batch sets its padded length.
            let longest = jobs[order[start].0].items[order[start].1].ids.len().max(1);
            let fit = (cfg.max_batch_tokens / longest).clamp(1, cfg.max_batch_items.max(1));
            let end = (start + fit).min(order.len());
            let slice = &order[start..end];
            let batch: Vec<&Encoded> = slice.iter().map(|&(j, i)| &jobs[j].items[i]).collect();
            let tokens: usize = batch.iter().map(|e| e.ids.len()).sum();
            let t0 = Instant::now();
            match run(&batch) {
                Ok(vectors) if vectors.len() == batch.len() => {
                    for (&(j, i), v) in slice.iter().zip(vectors) {
                        results[j][i] = Some(v);
                    }
                }
                Ok(vectors) => {
                    let msg = format!("the model returned {} vectors for {} inputs", vectors.len(), batch.len());
                    slice.iter().for_each(|&(j, _)| failed[j] = Some(msg.clone()));
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    slice.iter().for_each(|&(j, _)| failed[j] = Some(msg.clone()));
                }
            }
            if let Some(o) = &observer {
                o.batch(batch.len(), tokens, batch.len() * longest, t0.elapsed().as_secs_f64());
            }
            start = end;
        }

        // Before the replies, so a caller that got its answer never sees itself still counted.
        depth.fetch_sub(round, Ordering::SeqCst);
        for ((job, res), fail) in jobs.into_iter().zip(results).zip(failed) {
            let reply = match fail {
                Some(msg) => Err(EmbedError::Model(msg)),
                None => Ok(res.into_iter().map(|v| v.expect("every item of a successful job has a vector")).collect()),
            };
            let _ = job.reply.send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Record(Mutex<Vec<(usize, usize)>>);
    impl BatchObserver for Record {
        fn batch(&self, items: usize, _tokens: usize, padded: usize, _s: f64) {
            self.0.lock().unwrap().push((items, padded));
        }
    }

    fn enc(len: usize, tag: u32) -> Encoded {
        Encoded { ids: vec![tag; len], original_len: len }
    }

    #[test]
    fn batches_respect_the_token_budget_and_keep_order() {
        let rec = Arc::new(Record(Mutex::new(Vec::new())));
        // The "model" returns [first id, length] so the test can check the routing.
        let b = Batcher::start(
            |batch: &[&Encoded]| Ok(batch.iter().map(|e| vec![e.ids[0] as f32, e.ids.len() as f32]).collect()),
            BatcherConfig { max_batch_tokens: 100, max_batch_items: 8, max_queue: 16 },
            Some(rec.clone()),
        );
        let items: Vec<Encoded> = (0..20).map(|i| enc(5 + (i * 7) % 40, i as u32)).collect();
        let out = b.embed_blocking(items.clone()).unwrap();
        assert_eq!(out.len(), 20);
        for (e, v) in items.iter().zip(&out) {
            assert_eq!(v, &vec![e.ids[0] as f32, e.ids.len() as f32]);
        }
        for &(n, padded) in rec.0.lock().unwrap().iter() {
            assert!(n <= 8 && (padded <= 100 || n == 1), "batch of {n} padded to {padded}");
        }
        assert_eq!(b.depth(), 0);
    }

    #[test]
    fn a_failing_batch_fails_its_request_only() {
        let b = Batcher::start(
            |batch: &[&Encoded]| {
                if batch.iter().any(|e| e.ids[0] == 99) {
                    anyhow::bail!("boom")
                } else {
                    Ok(batch.iter().map(|_| vec![1.0]).collect())
                }
            },
            BatcherConfig::default(),
            None,
        );
        assert!(matches!(b.embed_blocking(vec![enc(3, 99)]), Err(EmbedError::Model(m)) if m.contains("boom")));
        assert_eq!(b.embed_blocking(vec![enc(3, 1)]).unwrap(), vec![vec![1.0]]);
    }
}
