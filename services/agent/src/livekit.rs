//! The LiveKit transport: the agent's side of a room through voice-livekit (LiveKit's native
//! core). Joins as `agent`, subscribes to the user's microphone at 16 kHz mono (the core
//! resamples), publishes one 48 kHz mono track, and sends data messages.
//!
//! A supervisor task per room turns room events into [`TransportEvent`]s and rejoins when the
//! connection is lost for good (a LiveKit server restart): the conversation goes on, and the
//! output swaps to the new track underneath it.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voice_livekit::{AudioSource, AudioStream, Ffi, ParticipantKind, Room, RoomEvent, RoomOptions, TrackKind};

use crate::{
    dispatch::{JoinedRoom, RoomJoiner},
    token::{mint, LiveKitKeys},
    transport::{AgentOutput, TransportEvent, INPUT_RATE, OUTPUT_RATE},
};

/// Audio the source holds ahead of playout: what a barge-in throws away, and the pacing slack.
pub const QUEUE_MS: u32 = 100;
/// How long the agent keeps trying to get back into a room it lost.
const REJOIN_WINDOW: Duration = Duration::from_secs(60);
/// How long the agent waits in an empty room for the user to arrive.
const EMPTY_ROOM_TIMEOUT: Duration = Duration::from_secs(60);
pub const AGENT_IDENTITY: &str = "agent";

pub struct LiveKitJoiner {
    ffi: Arc<Ffi>,
    url: String,
    keys: LiveKitKeys,
    reconnects: Option<prometheus::IntCounter>,
    queue_ms: u32,
}

impl LiveKitJoiner {
    pub fn new(ffi_lib: &Path, url: String, keys: LiveKitKeys) -> Result<Self> {
        let ffi = Ffi::load(ffi_lib).with_context(|| format!("loading LiveKit's native core {}", ffi_lib.display()))?;
        tracing::info!(lib = %ffi_lib.display(), version = ffi.version(), "LiveKit core loaded");
        Ok(Self { ffi, url, keys, reconnects: None, queue_ms: QUEUE_MS })
    }

    /// The published source's queue (default [`QUEUE_MS`]); tests queue more to see a flush.
    pub fn with_queue_ms(mut self, ms: u32) -> Self {
        self.queue_ms = ms.max(10);
        self
    }

    pub fn with_reconnect_counter(mut self, c: prometheus::IntCounter) -> Self {
        self.reconnects = Some(c);
        self
    }
}

/// The published track, replaced when the agent rejoins.
struct Output {
    source: Mutex<Option<Arc<AudioSource>>>,
    room: Mutex<Option<Arc<Room>>>,
    queue_ms: u32,
}

struct LiveKitOutput(Arc<Output>);

impl AgentOutput for LiveKitOutput {
    fn push_frame(&self, frame: Vec<i16>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let source = self.0.source.lock().unwrap().clone();
            match source {
                Some(s) => s.capture_frame(&frame).await,
                // Rejoining: keep real time, the frame is lost with the connection.
                None => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(())
                }
            }
        })
    }

    fn flush(&self) {
        if let Some(s) = self.0.source.lock().unwrap().as_ref() {
            if let Err(e) = s.clear_queue() {
                tracing::warn!(error = %e, "could not clear the agent's audio queue");
            }
        }
    }

    fn queue_ms(&self) -> u32 {
        self.0.queue_ms
    }

    fn send_data(&self, topic: &'static str, payload: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let room = self.0.room.lock().unwrap().clone();
            match room {
                Some(r) => r.publish_data(&payload, topic, true).await,
                None => Ok(()),
            }
        })
    }
}

impl RoomJoiner for LiveKitJoiner {
    fn join(&self, room_name: &str) -> BoxFuture<'_, Result<JoinedRoom>> {
        let room_name = room_name.to_string();
        Box::pin(async move {
            let out = Arc::new(Output { source: Mutex::new(None), room: Mutex::new(None), queue_ms: self.queue_ms });
            let (room, events) = self.connect(&room_name, &out).await?;
            let (tx, rx) = mpsc::channel(512);
            let stop = CancellationToken::new();
            let sup = Supervisor {
                ffi: self.ffi.clone(),
                url: self.url.clone(),
                keys: self.keys.clone(),
                room_name: room_name.clone(),
                out: out.clone(),
                tx,
                stop: stop.clone(),
                reconnects: self.reconnects.clone(),
            };
            tokio::spawn(sup.run(room, events));
            let leave_out = out.clone();
            Ok(JoinedRoom {
                output: Arc::new(LiveKitOutput(out)),
                events: rx,
                leave: Box::new(move || {
                    Box::pin(async move {
                        stop.cancel();
                        leave_out.source.lock().unwrap().take();
                        let room = leave_out.room.lock().unwrap().take();
                        if let Some(r) = room {
                            let _ = r.disconnect().await;
                        }
                    })
                }),
            })
        })
    }
}

impl LiveKitJoiner {
    async fn connect(&self, room_name: &str, out: &Arc<Output>) -> Result<(Arc<Room>, mpsc::UnboundedReceiver<RoomEvent>)> {
        connect(&self.ffi, &self.url, &self.keys, room_name, out).await
    }
}

async fn connect(
    ffi: &Arc<Ffi>,
    url: &str,
    keys: &LiveKitKeys,
    room_name: &str,
    out: &Arc<Output>,
) -> Result<(Arc<Room>, mpsc::UnboundedReceiver<RoomEvent>)> {
    let token = mint(keys, room_name, AGENT_IDENTITY, "Voice agent", Duration::from_secs(24 * 3600))?;
    let (room, events) =
        Room::connect(ffi, url, &token, RoomOptions::default()).await.with_context(|| format!("joining room {room_name} at {url}"))?;
    let room = Arc::new(room);
    let source = room.publish_audio_with_queue("agent-voice", OUTPUT_RATE, 1, out.queue_ms).await.context("publishing the agent's audio track")?;
    *out.source.lock().unwrap() = Some(Arc::new(source));
    *out.room.lock().unwrap() = Some(room.clone());
    Ok((room, events))
}

struct Supervisor {
    ffi: Arc<Ffi>,
    url: String,
    keys: LiveKitKeys,
    room_name: String,
    out: Arc<Output>,
    tx: mpsc::Sender<TransportEvent>,
    stop: CancellationToken,
    reconnects: Option<prometheus::IntCounter>,
}

impl Supervisor {
    async fn run(self, mut room: Arc<Room>, mut events: mpsc::UnboundedReceiver<RoomEvent>) {
        let mut users: Vec<String> = Vec::new();
        let mut mic: Option<tokio::task::JoinHandle<()>> = None;
        let mut empty_since = Instant::now();
        let mut ever_joined = false;
        // While the core reconnects, the participants it drops are not users leaving.
        let mut reconnecting = false;
        loop {
            let ev = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)), if !ever_joined => {
                    if empty_since.elapsed() > EMPTY_ROOM_TIMEOUT {
                        let _ = self.tx.send(TransportEvent::UserLeft("nobody joined".into())).await;
                        break;
                    }
                    continue;
                }
                ev = events.recv() => ev,
            };
            let Some(ev) = ev else {
                // The channel closed without a Disconnected event: treat it as one.
                match self.rejoin().await {
                    Some((r, e)) => {
                        (room, events) = (r, e);
                        (users, ever_joined, empty_since, reconnecting) = (Vec::new(), false, Instant::now(), false);
                        continue;
                    }
                    None => break,
                }
            };
            match ev {
                RoomEvent::ParticipantConnected { identity, kind, .. } if kind != ParticipantKind::Agent && identity != AGENT_IDENTITY => {
                    if !users.contains(&identity) {
                        users.push(identity.clone());
                    }
                    ever_joined = true;
                    let _ = self.tx.send(TransportEvent::UserJoined(identity)).await;
                }
                RoomEvent::ParticipantDisconnected { identity, .. } => {
                    users.retain(|u| *u != identity);
                    if users.is_empty() && ever_joined && !reconnecting {
                        let _ = self.tx.send(TransportEvent::UserLeft(identity)).await;
                        break;
                    }
                }
                RoomEvent::TrackSubscribed { participant, track } if track.kind == TrackKind::KindAudio && participant != AGENT_IDENTITY => {
                    // The newest microphone wins (a user who switched devices republishes).
                    match AudioStream::subscribe(&self.ffi, &track, INPUT_RATE, 1) {
                        Ok(mut stream) => {
                            if let Some(old) = mic.take() {
                                old.abort();
                            }
                            let tx = self.tx.clone();
                            mic = Some(tokio::spawn(async move {
                                while let Some(frame) = stream.recv().await {
                                    if tx.send(TransportEvent::Audio(frame.samples)).await.is_err() {
                                        break;
                                    }
                                }
                            }));
                            tracing::info!(room = %self.room_name, user = %participant, track = %track.sid, "listening to the user's microphone");
                        }
                        Err(e) => tracing::error!(room = %self.room_name, error = %format!("{e:#}"), "could not subscribe to the user's audio"),
                    }
                }
                RoomEvent::Reconnecting => {
                    reconnecting = true;
                    tracing::warn!(room = %self.room_name, "connection to LiveKit interrupted; the core is reconnecting");
                }
                RoomEvent::Reconnected => {
                    reconnecting = false;
                    tracing::info!(room = %self.room_name, "reconnected to LiveKit");
                    if users.is_empty() && ever_joined {
                        // Everyone left while we were away.
                        (ever_joined, empty_since) = (false, Instant::now());
                    }
                }
                RoomEvent::Disconnected { reason } => {
                    tracing::warn!(room = %self.room_name, ?reason, "disconnected from the room");
                    if let Some(m) = mic.take() {
                        m.abort();
                    }
                    match self.rejoin().await {
                        Some((r, e)) => {
                            (room, events) = (r, e);
                            // Who is there is announced again; wait for the user as on a first join.
                            (users, ever_joined, empty_since, reconnecting) = (Vec::new(), false, Instant::now(), false);
                        }
                        None => break,
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = mic.take() {
            m.abort();
        }
        let _ = &room;
    }

    /// Get back into the room after losing it: new token, new connection, new track. None when
    /// the window passed (the conversation then ends) or we were told to stop.
    async fn rejoin(&self) -> Option<(Arc<Room>, mpsc::UnboundedReceiver<RoomEvent>)> {
        self.out.source.lock().unwrap().take();
        self.out.room.lock().unwrap().take();
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        while start.elapsed() < REJOIN_WINDOW && !self.stop.is_cancelled() {
            match connect(&self.ffi, &self.url, &self.keys, &self.room_name, &self.out).await {
                Ok(joined) => {
                    if let Some(c) = &self.reconnects {
                        c.inc();
                    }
                    tracing::info!(room = %self.room_name, after_ms = start.elapsed().as_millis() as u64, "rejoined the room");
                    return Some(joined);
                }
                Err(e) => {
                    tracing::warn!(room = %self.room_name, error = %format!("{e:#}"), "rejoining failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => return None,
                    }
                    delay = (delay * 2).min(Duration::from_secs(4));
                }
            }
        }
        let _ = self.tx.send(TransportEvent::Closed(format!("could not rejoin room {} within {REJOIN_WINDOW:?}", self.room_name))).await;
        None
    }
}
