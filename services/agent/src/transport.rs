//! What the conversation loop needs from a room, and nothing about how the room works: user audio
//! in (16 kHz mono), agent audio out (48 kHz mono, 10 ms frames), data messages out.
//!
//! [`livekit`](crate::livekit) implements it over LiveKit's FFI; [`InMemoryTransport`] implements
//! it in process for tests, with a playout clock that behaves like LiveKit's audio source (a
//! bounded queue drained at real time), so barge-in and flushing are tested for real.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, Notify};

/// User audio reaches the loop at this rate (Silero VAD and Whisper both want 16 kHz).
pub const INPUT_RATE: u32 = 16_000;
/// The agent's track: 48 kHz mono in 10 ms frames, what WebRTC's Opus encoder takes.
pub const OUTPUT_RATE: u32 = 48_000;
pub const OUTPUT_FRAME: usize = 480;

#[derive(Debug)]
pub enum TransportEvent {
    /// 16 kHz mono PCM from the user, in arrival order.
    Audio(Vec<i16>),
    UserJoined(String),
    UserLeft(String),
    /// The room is gone for good (after the transport's own reconnect attempts).
    Closed(String),
}

/// The agent's side of a room.
pub trait AgentOutput: Send + Sync + 'static {
    /// Queue one 10 ms frame. Resolves once the transport's queue has room: that pacing keeps
    /// the agent at most [`queue_ms`](Self::queue_ms) ahead of what the user hears.
    fn push_frame(&self, frame: Vec<i16>) -> BoxFuture<'_, Result<()>>;
    /// Drop what is queued and not yet played (barge-in), and wake a blocked `push_frame`.
    fn flush(&self);
    /// Audio the transport may hold ahead of playout.
    fn queue_ms(&self) -> u32;
    /// A reliable data message to the room (transcripts, state, metrics).
    fn send_data(&self, topic: &'static str, payload: Vec<u8>) -> BoxFuture<'_, Result<()>>;
}

/// One frame as the user heard it, with when.
#[derive(Debug, Clone)]
pub struct PlayedFrame {
    pub at: Instant,
    pub samples: Vec<i16>,
}

#[derive(Debug, Clone)]
pub struct DataMessage {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Playout {
    queue: VecDeque<Vec<i16>>,
    played: Vec<PlayedFrame>,
    data: Vec<DataMessage>,
    flushes: Vec<Instant>,
}

/// An in-process room for tests: the test plays the user, the agent gets [`AgentOutput`].
#[derive(Clone)]
pub struct InMemoryTransport {
    inner: Arc<Mutex<Playout>>,
    room: Arc<Notify>,
    queue_frames: usize,
    events: mpsc::Sender<TransportEvent>,
}

impl InMemoryTransport {
    /// A room whose playout queue holds `queue_ms` of audio; returns the transport (for the test
    /// and, as `AgentOutput`, for the agent) and the agent's event receiver.
    pub fn new(queue_ms: u32) -> (Self, mpsc::Receiver<TransportEvent>) {
        let (events, rx) = mpsc::channel(1024);
        let t = Self { inner: Arc::default(), room: Arc::new(Notify::new()), queue_frames: (queue_ms as usize / 10).max(1), events };
        let playout = t.clone();
        // The listener's ear: one frame every 10 ms, silence when the queue is empty.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                if playout.events.is_closed() {
                    break;
                }
                let mut p = playout.inner.lock().unwrap();
                if let Some(f) = p.queue.pop_front() {
                    p.played.push(PlayedFrame { at: Instant::now(), samples: f });
                    drop(p);
                    playout.room.notify_waiters();
                }
            }
        });
        (t, rx)
    }

    /// Speak `samples` (16 kHz mono) into the room at real time, 20 ms per frame, as a
    /// microphone would.
    pub async fn say(&self, samples: &[i16]) -> Result<()> {
        self.say_timed(samples).await.map(|_| ())
    }

    /// [`say`](Self::say), returning the instant each 20 ms frame (320 samples) was handed to the
    /// agent: what a test measures the agent's latency from, independently of its own clock.
    pub async fn say_timed(&self, samples: &[i16]) -> Result<Vec<Instant>> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut fed = Vec::with_capacity(samples.len().div_ceil(320));
        for chunk in samples.chunks(320) {
            tick.tick().await;
            self.events.send(TransportEvent::Audio(chunk.to_vec())).await?;
            fed.push(Instant::now());
        }
        Ok(fed)
    }

    /// `d` of silence from the microphone.
    pub async fn silence(&self, d: Duration) -> Result<()> {
        self.say(&vec![0i16; (d.as_millis() as usize) * 16]).await
    }

    /// A live microphone: 20 ms frames at real time, silence unless [`Microphone::say`] queued
    /// speech, until dropped. What a benchmark needs to hold many turns without scripting every
    /// silence.
    pub fn microphone(&self) -> Microphone {
        let queue: Arc<Mutex<VecDeque<i16>>> = Arc::default();
        let drained = Arc::new(Notify::new());
        let (q, d, events) = (queue.clone(), drained.clone(), self.events.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let frame: Vec<i16> = {
                    let mut q = q.lock().unwrap();
                    let n = q.len().min(320);
                    let mut f: Vec<i16> = q.drain(..n).collect();
                    if q.is_empty() {
                        d.notify_waiters();
                    }
                    f.resize(320, 0);
                    f
                };
                if events.send(TransportEvent::Audio(frame)).await.is_err() {
                    break;
                }
            }
        });
        Microphone { queue, drained, task }
    }

    pub async fn send(&self, e: TransportEvent) -> Result<()> {
        Ok(self.events.send(e).await?)
    }

    pub fn played(&self) -> Vec<PlayedFrame> {
        self.inner.lock().unwrap().played.clone()
    }

    pub fn data(&self) -> Vec<DataMessage> {
        self.inner.lock().unwrap().data.clone()
    }

    pub fn flushes(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().flushes.clone()
    }

    pub fn queued_frames(&self) -> usize {
        self.inner.lock().unwrap().queue.len()
    }
}

/// See [`InMemoryTransport::microphone`].
pub struct Microphone {
    queue: Arc<Mutex<VecDeque<i16>>>,
    drained: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Microphone {
    /// Speak `samples` (16 kHz mono); returns when the last of them went out.
    pub async fn say(&self, samples: &[i16]) {
        let done = self.drained.notified();
        tokio::pin!(done);
        // Registered before the audio is queued, so the drain cannot be missed.
        done.as_mut().enable();
        self.queue.lock().unwrap().extend(samples.iter().copied());
        done.await;
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentOutput for InMemoryTransport {
    fn push_frame(&self, frame: Vec<i16>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            loop {
                // Register for the wake-up before looking, so a frame played in between is not missed.
                let notified = self.room.notified();
                {
                    let mut p = self.inner.lock().unwrap();
                    if p.queue.len() < self.queue_frames {
                        p.queue.push_back(frame);
                        return Ok(());
                    }
                }
                notified.await;
            }
        })
    }

    fn flush(&self) {
        let mut p = self.inner.lock().unwrap();
        p.queue.clear();
        p.flushes.push(Instant::now());
        drop(p);
        self.room.notify_waiters();
    }

    fn queue_ms(&self) -> u32 {
        self.queue_frames as u32 * 10
    }

    fn send_data(&self, topic: &'static str, payload: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        self.inner.lock().unwrap().data.push(DataMessage { at: Instant::now(), topic: topic.into(), payload });
        Box::pin(async { Ok(()) })
    }
}
