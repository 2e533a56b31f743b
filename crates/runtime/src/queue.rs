//! Admission control in front of the model: at most `max_concurrency` executions at once and at
//! most `max_queue` requests waiting; anything beyond is refused at once with 429 + Retry-After
//! rather than piling up memory and latency.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{error::ApiError, metrics::Metrics};

#[derive(Clone)]
pub struct WorkQueue {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    metrics: Metrics,
    /// Rough time one execution takes, used for Retry-After (updated by callers).
    typical_secs: Arc<AtomicUsize>,
}

/// Held while a request runs on the model; frees the slot when dropped.
pub struct WorkPermit {
    _permit: OwnedSemaphorePermit,
}

struct WaitGuard<'a> {
    waiting: &'a AtomicUsize,
    metrics: &'a Metrics,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queue_depth.dec();
    }
}

impl WorkQueue {
    pub fn new(max_concurrency: usize, max_queue: usize, metrics: Metrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_queue,
            metrics,
            typical_secs: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn set_typical_duration(&self, d: Duration) {
        self.typical_secs.store(d.as_secs().max(1) as usize, Ordering::Relaxed);
    }

    fn retry_after(&self) -> Duration {
        let per = self.typical_secs.load(Ordering::Relaxed) as u64;
        let depth = self.depth() as u64;
        let slots = self.slots.available_permits().max(1) as u64;
        Duration::from_secs((per * (depth / slots + 1)).clamp(1, 60))
    }

    /// Wait for a model slot, or refuse with 429 when too many are already waiting.
    pub async fn acquire(&self) -> Result<WorkPermit, ApiError> {
        // Fast path: a free slot and nobody queued ahead.
        if self.depth() == 0 {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return Ok(WorkPermit { _permit: p });
            }
        }
        let prev = self.waiting.fetch_add(1, Ordering::SeqCst);
        self.metrics.queue_depth.inc();
        let guard = WaitGuard { waiting: &self.waiting, metrics: &self.metrics };
        if prev >= self.max_queue {
            drop(guard);
            self.metrics.rejected.with_label_values(&["queue_full"]).inc();
            return Err(ApiError::overloaded(self.retry_after()));
        }
        let permit =
            self.slots.clone().acquire_owned().await.map_err(|_| ApiError::unavailable("the service is shutting down", Duration::from_secs(5)))?;
        drop(guard);
        Ok(WorkPermit { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_queue_bound() {
        let q = WorkQueue::new(1, 1, Metrics::new("qtest").unwrap());
        let first = q.acquire().await.unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(q.depth(), 1);
        let refused = q.acquire().await.err().expect("third request must be refused");
        assert_eq!(refused.status.as_u16(), 429);
        assert!(refused.retry_after.is_some());
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(q.depth(), 0);
    }
}
