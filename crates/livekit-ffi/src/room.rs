//! Rooms: connect, events, data messages, disconnect.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::mpsc;

use crate::{
    audio::{self, AudioSource, DEFAULT_QUEUE_SIZE_MS},
    ffi::{copy_buffer, Ffi, OwnedHandle, RoomSink},
    proto::{self, ffi_event, ffi_request, ConnectionState, DisconnectReason, ParticipantKind, TrackKind, TrackSource},
};

/// How to join a room.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// Subscribe to every published track (then [`RoomEvent::TrackSubscribed`] arrives by itself).
    pub auto_subscribe: bool,
    /// Video-only optimisations; off for an audio agent.
    pub adaptive_stream: bool,
    pub dynacast: bool,
    /// Join attempts before the connect fails (library default if None).
    pub join_retries: Option<u32>,
    /// Connect timeout (library default if None).
    pub connect_timeout: Option<Duration>,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self { auto_subscribe: true, adaptive_stream: false, dynacast: false, join_retries: None, connect_timeout: None }
    }
}

/// A remote track we are subscribed to; pass it to [`crate::AudioStream::subscribe`]. Cloning is
/// cheap; the library's track handle is released when the last clone (and stream) is gone.
#[derive(Clone)]
pub struct RemoteTrack {
    pub sid: String,
    pub name: String,
    pub kind: TrackKind,
    pub(crate) handle: Arc<OwnedHandle>,
    pub(crate) room_handle: u64,
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack").field("sid", &self.sid).field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// What happens in a room, as this client sees it.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// Also sent, first, for everyone already in the room when we joined.
    ParticipantConnected {
        identity: String,
        name: String,
        metadata: String,
        kind: ParticipantKind,
    },
    ParticipantDisconnected {
        identity: String,
        reason: DisconnectReason,
    },
    TrackPublished {
        participant: String,
        sid: String,
        name: String,
        kind: TrackKind,
        source: TrackSource,
    },
    TrackUnpublished {
        participant: String,
        sid: String,
    },
    TrackSubscribed {
        participant: String,
        track: RemoteTrack,
    },
    TrackUnsubscribed {
        participant: String,
        sid: String,
    },
    TrackSubscriptionFailed {
        participant: String,
        sid: String,
        error: String,
    },
    TrackMuted {
        participant: String,
        sid: String,
    },
    TrackUnmuted {
        participant: String,
        sid: String,
    },
    /// One of our own tracks is now published.
    LocalTrackPublished {
        sid: String,
    },
    LocalTrackUnpublished {
        sid: String,
    },
    ActiveSpeakersChanged {
        identities: Vec<String>,
    },
    /// A data message ([`Room::publish_data`] on the other side). `participant` is empty for
    /// messages sent by the server API.
    DataReceived {
        participant: String,
        topic: String,
        payload: Vec<u8>,
        reliable: bool,
    },
    ConnectionStateChanged {
        state: ConnectionState,
    },
    Reconnecting,
    Reconnected,
    /// The room is gone for us; the event channel closes right after.
    Disconnected {
        reason: DisconnectReason,
    },
}

pub(crate) struct RoomInner {
    pub(crate) ffi: Arc<Ffi>,
    pub(crate) handle: OwnedHandle,
    pub(crate) local_participant: OwnedHandle,
    pub(crate) connected: Arc<AtomicBool>,
    disconnect_sent: AtomicBool,
    sid: String,
    name: String,
    local_identity: String,
}

/// A joined room. Dropping it disconnects (without waiting); prefer [`Room::disconnect`].
pub struct Room {
    inner: Arc<RoomInner>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("name", &self.inner.name).field("identity", &self.inner.local_identity).finish_non_exhaustive()
    }
}

impl Room {
    /// Join the room the token grants (`url`: `ws://host:7880` or `wss://...`). The events come on
    /// the returned channel (unbounded: the library's thread never waits on the consumer; room
    /// events are few), starting with a `ParticipantConnected` for everyone already there; it
    /// closes after the room is disconnected.
    pub async fn connect(ffi: &Arc<Ffi>, url: &str, token: &str, options: RoomOptions) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>)> {
        let room_options = proto::RoomOptions {
            auto_subscribe: Some(options.auto_subscribe),
            adaptive_stream: Some(options.adaptive_stream),
            dynacast: Some(options.dynacast),
            join_retries: options.join_retries,
            connect_timeout_ms: options.connect_timeout.map(|d| d.as_millis() as u64),
        };
        let callback = ffi
            .call(None, |id| {
                ffi_request::Message::Connect(proto::ConnectRequest {
                    url: url.to_string(),
                    token: token.to_string(),
                    options: room_options,
                    request_async_id: Some(id),
                })
            })
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let ffi_event::Message::Connect(cb) = callback else { bail!("unexpected callback to Connect") };
        let result = match cb.message {
            Some(proto::connect_callback::Message::Result(r)) => r,
            Some(proto::connect_callback::Message::Error(e)) => bail!("connecting to {url}: {e}"),
            None => bail!("connecting to {url}: the library answered neither a room nor an error"),
        };
        // Take ownership of every handle first, so that any early return releases them.
        let room = result.room;
        let room_handle = OwnedHandle::new(ffi, room.handle.id);
        let local = result.local_participant;
        let local_handle = OwnedHandle::new(ffi, local.handle.id);
        let (tx, rx) = mpsc::unbounded_channel();
        for p in result.participants {
            let participant = p.participant;
            drop(OwnedHandle::new(ffi, participant.handle.id));
            for publication in p.publications {
                drop(OwnedHandle::new(ffi, publication.handle.id));
            }
            let info = participant.info;
            let _ = tx.send(RoomEvent::ParticipantConnected { kind: info.kind(), identity: info.identity, name: info.name, metadata: info.metadata });
        }
        if room_handle.id() == 0 || local_handle.id() == 0 {
            bail!("connecting to {url}: the library's answer lacks the room or participant handle");
        }
        let connected = Arc::new(AtomicBool::new(true));
        ffi.register_room(room_handle.id(), RoomSink { tx, connected: connected.clone() });
        let info = room.info;
        let inner = Arc::new(RoomInner {
            ffi: ffi.clone(),
            connected,
            disconnect_sent: AtomicBool::new(false),
            sid: info.sid.unwrap_or_default(),
            name: info.name,
            local_identity: local.info.identity,
            handle: room_handle,
            local_participant: local_handle,
        });
        let room = Room { inner };
        // Room events are held back by the library until we say we listen.
        ffi.request(ffi_request::Message::ReadyForRoomEvent(proto::ReadyForRoomEventRequest { room_handle: room.inner.handle.id() }))
            .context("ReadyForRoomEvent")?;
        tracing::info!(room = %room.inner.name, identity = %room.inner.local_identity, "joined LiveKit room");
        Ok((room, rx))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The room's sid as known at connect time (may be empty until the server assigns it).
    pub fn sid(&self) -> &str {
        &self.inner.sid
    }

    pub fn local_identity(&self) -> &str {
        &self.inner.local_identity
    }

    /// Whether the room is connected (false after a disconnect by either side).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire) && !self.inner.disconnect_sent.load(Ordering::Acquire)
    }

    /// Publish a microphone-kind audio track fed by the returned source (interleaved i16 PCM at
    /// `sample_rate`, `num_channels`), with a [`DEFAULT_QUEUE_SIZE_MS`] queue.
    pub async fn publish_audio(&self, name: &str, sample_rate: u32, num_channels: u32) -> Result<AudioSource> {
        audio::publish(&self.inner, name, sample_rate, num_channels, DEFAULT_QUEUE_SIZE_MS).await
    }

    /// [`Room::publish_audio`] with the source's queue length chosen: `capture_frame` returns as
    /// soon as the frame is in the queue while the queue holds less than `queue_size_ms`, then
    /// paces the caller at real time; `clear_queue` drops what is queued.
    pub async fn publish_audio_with_queue(&self, name: &str, sample_rate: u32, num_channels: u32, queue_size_ms: u32) -> Result<AudioSource> {
        audio::publish(&self.inner, name, sample_rate, num_channels, queue_size_ms).await
    }

    /// Send a data message to everyone in the room (`reliable`: ordered and retransmitted, else
    /// lossy). Returns once the library has sent it.
    pub async fn publish_data(&self, payload: &[u8], topic: &str, reliable: bool) -> Result<()> {
        let inner = &self.inner;
        if !self.is_connected() {
            bail!("publish_data: the room is not connected");
        }
        // The library reads the payload by address: it lives in the pending call until the callback.
        let buf: Box<[u8]> = payload.into();
        let (ptr, len) = (buf.as_ptr() as u64, buf.len() as u64);
        let local = inner.local_participant.id();
        let callback = inner
            .ffi
            .call(Some(Box::new(buf)), |id| {
                ffi_request::Message::PublishData(proto::PublishDataRequest {
                    local_participant_handle: local,
                    data_ptr: ptr,
                    data_len: len,
                    reliable,
                    destination_sids: Vec::new(),
                    topic: Some(topic.to_string()),
                    destination_identities: Vec::new(),
                    request_async_id: Some(id),
                })
            })
            .await?;
        match callback {
            ffi_event::Message::PublishData(cb) => match cb.error {
                Some(e) if !e.is_empty() => Err(anyhow!("publish_data: {e}")),
                _ => Ok(()),
            },
            _ => bail!("unexpected callback to PublishData"),
        }
    }

    /// Leave the room and wait for the library to close it. Idempotent.
    pub async fn disconnect(&self) -> Result<()> {
        if self.inner.disconnect_sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let room_handle = self.inner.handle.id();
        self.inner
            .ffi
            .call(None, |id| {
                ffi_request::Message::Disconnect(proto::DisconnectRequest {
                    room_handle,
                    request_async_id: Some(id),
                    reason: Some(DisconnectReason::ClientInitiated as i32),
                })
            })
            .await?;
        self.inner.connected.store(false, Ordering::Release);
        Ok(())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if !self.inner.disconnect_sent.swap(true, Ordering::AcqRel) {
            let room_handle = self.inner.handle.id();
            self.inner.ffi.call_detached(|id| {
                ffi_request::Message::Disconnect(proto::DisconnectRequest {
                    room_handle,
                    request_async_id: Some(id),
                    reason: Some(DisconnectReason::ClientInitiated as i32),
                })
            });
        }
    }
}

impl RoomInner {
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.disconnect_sent.load(Ordering::Acquire)
    }
}

/// Library room event -> ours. Handles the event carries are taken over here: kept in the event
/// (a subscribed track) or released.
pub(crate) fn convert_event(ffi: &Arc<Ffi>, room_handle: u64, message: proto::room_event::Message) -> Option<RoomEvent> {
    use proto::room_event::Message as M;
    let reason = |r: i32| DisconnectReason::try_from(r).unwrap_or(DisconnectReason::UnknownReason);
    Some(match message {
        M::ParticipantConnected(e) => {
            let p = e.info;
            drop(OwnedHandle::new(ffi, p.handle.id));
            let info = p.info;
            RoomEvent::ParticipantConnected { kind: info.kind(), identity: info.identity, name: info.name, metadata: info.metadata }
        }
        M::ParticipantDisconnected(e) => RoomEvent::ParticipantDisconnected { reason: reason(e.disconnect_reason), identity: e.participant_identity },
        M::LocalTrackPublished(e) => RoomEvent::LocalTrackPublished { sid: e.track_sid },
        M::LocalTrackUnpublished(e) => RoomEvent::LocalTrackUnpublished { sid: e.publication_sid },
        M::TrackPublished(e) => {
            let publication = e.publication;
            drop(OwnedHandle::new(ffi, publication.handle.id));
            let info = publication.info;
            RoomEvent::TrackPublished {
                participant: e.participant_identity,
                kind: info.kind(),
                source: info.source(),
                sid: info.sid,
                name: info.name,
            }
        }
        M::TrackUnpublished(e) => RoomEvent::TrackUnpublished { participant: e.participant_identity, sid: e.publication_sid },
        M::TrackSubscribed(e) => {
            let track = e.track;
            let handle = Arc::new(OwnedHandle::new(ffi, track.handle.id));
            let info = track.info;
            if handle.id() == 0 {
                tracing::warn!(sid = %info.sid, "TrackSubscribed without a track handle ignored");
                return None;
            }
            RoomEvent::TrackSubscribed {
                participant: e.participant_identity,
                track: RemoteTrack { kind: info.kind(), sid: info.sid, name: info.name, handle, room_handle },
            }
        }
        M::TrackUnsubscribed(e) => RoomEvent::TrackUnsubscribed { participant: e.participant_identity, sid: e.track_sid },
        M::TrackSubscriptionFailed(e) => RoomEvent::TrackSubscriptionFailed { participant: e.participant_identity, sid: e.track_sid, error: e.error },
        M::TrackMuted(e) => RoomEvent::TrackMuted { participant: e.participant_identity, sid: e.track_sid },
        M::TrackUnmuted(e) => RoomEvent::TrackUnmuted { participant: e.participant_identity, sid: e.track_sid },
        M::ActiveSpeakersChanged(e) => RoomEvent::ActiveSpeakersChanged { identities: e.participant_identities },
        M::ConnectionStateChanged(e) => RoomEvent::ConnectionStateChanged { state: e.state() },
        M::Disconnected(e) => RoomEvent::Disconnected { reason: reason(e.reason) },
        M::Reconnecting(_) => RoomEvent::Reconnecting,
        M::Reconnected(_) => RoomEvent::Reconnected,
        M::DataPacketReceived(e) => {
            let reliable = e.kind() == proto::DataPacketKind::KindReliable;
            let Some(proto::data_packet_received::Value::User(user)) = e.value else { return None };
            let buffer = user.data;
            let _handle = OwnedHandle::new(ffi, buffer.handle.id);
            let Some(payload) = copy_buffer(&buffer.data) else {
                tracing::warn!("data packet with an implausible buffer dropped");
                return None;
            };
            RoomEvent::DataReceived { participant: e.participant_identity, topic: user.topic.unwrap_or_default(), payload, reliable }
        }
        // Not surfaced; only their handles are released.
        M::ByteStreamOpened(e) => {
            drop(OwnedHandle::new(ffi, e.reader.handle.id));
            return None;
        }
        M::TextStreamOpened(e) => {
            drop(OwnedHandle::new(ffi, e.reader.handle.id));
            return None;
        }
        M::DataTrackPublished(e) => {
            drop(OwnedHandle::new(ffi, e.track.handle.id));
            return None;
        }
        M::LocalTrackRepublished(e) => {
            drop(OwnedHandle::new(ffi, e.publication_handle));
            return None;
        }
        M::Eos(_) => return None,
    })
}
