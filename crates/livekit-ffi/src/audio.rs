//! Audio out (a published track fed by an [`AudioSource`]) and audio in (an [`AudioStream`] of a
//! subscribed remote track).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::mpsc;

use crate::{
    ffi::{Ffi, OwnedHandle, StreamSink},
    proto::{self, ffi_event, ffi_request, ffi_response},
    room::{RemoteTrack, RoomInner},
    TrackKind, TrackSource,
};

/// The source queue used by [`crate::Room::publish_audio`]: 500 ms. `capture_frame` returns as
/// soon as the frame is queued while less than this is queued, so a producer (TTS) can run up to
/// this far ahead of playback; `clear_queue` (barge-in) drops it at once. Longer absorbs producer
/// jitter, shorter bounds how stale [`AudioSource::queued_duration`] can be.
pub const DEFAULT_QUEUE_SIZE_MS: u32 = 500;

/// Frames buffered per [`AudioStream`] before new ones are dropped (2 s of 10 ms frames).
const STREAM_CHANNEL_FRAMES: usize = 200;

/// Interleaved signed 16-bit PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub samples: Vec<i16>,
    pub sample_rate: u32,
    pub num_channels: u32,
    pub samples_per_channel: u32,
}

impl AudioFrame {
    pub fn duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(f64::from(self.samples_per_channel) / f64::from(self.sample_rate))
    }
}

/// Our published audio track and the source that feeds it.
pub struct AudioSource {
    room: Arc<RoomInner>,
    source: OwnedHandle,
    _track: OwnedHandle,
    _publication: OwnedHandle,
    track_sid: String,
    sample_rate: u32,
    num_channels: u32,
    queue_size_ms: u32,
    /// When what we queued so far would be played out (estimate, from the real-time clock).
    playout_end: Mutex<Option<Instant>>,
    unpublished: AtomicBool,
}

impl std::fmt::Debug for AudioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSource")
            .field("track_sid", &self.track_sid)
            .field("sample_rate", &self.sample_rate)
            .field("num_channels", &self.num_channels)
            .field("queue_size_ms", &self.queue_size_ms)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn publish(room: &Arc<RoomInner>, name: &str, sample_rate: u32, num_channels: u32, queue_size_ms: u32) -> Result<AudioSource> {
    if !(8_000..=192_000).contains(&sample_rate) || !(1..=8).contains(&num_channels) {
        bail!("publish_audio: unsupported format {sample_rate} Hz x {num_channels} channels");
    }
    if !room.is_connected() {
        bail!("publish_audio: the room is not connected");
    }
    let ffi = &room.ffi;
    let response = ffi.request(ffi_request::Message::NewAudioSource(proto::NewAudioSourceRequest {
        r#type: proto::AudioSourceType::AudioSourceNative as i32,
        // Plain playout of synthesised audio: no voice processing.
        options: Some(proto::AudioSourceOptions { echo_cancellation: false, noise_suppression: false, auto_gain_control: false }),
        sample_rate: Some(sample_rate),
        num_channels: Some(num_channels),
        queue_size_ms: Some(queue_size_ms),
    }))?;
    let ffi_response::Message::NewAudioSource(r) = response else { bail!("unexpected response to NewAudioSource") };
    let source = OwnedHandle::new(ffi, r.source.handle.id);

    let response =
        ffi.request(ffi_request::Message::CreateAudioTrack(proto::CreateAudioTrackRequest { name: name.to_string(), source_handle: source.id() }))?;
    let ffi_response::Message::CreateAudioTrack(r) = response else { bail!("unexpected response to CreateAudioTrack") };
    let track = OwnedHandle::new(ffi, r.track.handle.id);

    let (local, track_id) = (room.local_participant.id(), track.id());
    let callback = ffi
        .call(None, |id| {
            ffi_request::Message::PublishTrack(proto::PublishTrackRequest {
                local_participant_handle: local,
                track_handle: track_id,
                options: proto::TrackPublishOptions { source: Some(TrackSource::SourceMicrophone as i32), ..Default::default() },
                request_async_id: Some(id),
            })
        })
        .await
        .context("publishing the audio track")?;
    let ffi_event::Message::PublishTrack(cb) = callback else { bail!("unexpected callback to PublishTrack") };
    let publication = match cb.message {
        Some(proto::publish_track_callback::Message::Publication(p)) => p,
        Some(proto::publish_track_callback::Message::Error(e)) => bail!("publishing the audio track: {e}"),
        None => bail!("publishing the audio track: no answer"),
    };
    let publication_handle = OwnedHandle::new(ffi, publication.handle.id);
    let track_sid = publication.info.sid;
    tracing::debug!(%track_sid, sample_rate, num_channels, queue_size_ms, "audio track published");
    Ok(AudioSource {
        room: room.clone(),
        source,
        _track: track,
        _publication: publication_handle,
        track_sid,
        sample_rate,
        num_channels,
        queue_size_ms,
        playout_end: Mutex::new(None),
        unpublished: AtomicBool::new(false),
    })
}

impl AudioSource {
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn num_channels(&self) -> u32 {
        self.num_channels
    }

    pub fn queue_size_ms(&self) -> u32 {
        self.queue_size_ms
    }

    /// The published track's sid.
    pub fn track_sid(&self) -> &str {
        &self.track_sid
    }

    /// Queue interleaved samples (`samples.len()` a multiple of the channel count; any length,
    /// 10 ms multiples are the natural size). Returns once the frame is in the source's queue:
    /// immediately while the queue has room, else when playout has made room (real-time pacing).
    pub async fn capture_frame(&self, samples: &[i16]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let channels = self.num_channels as usize;
        if !samples.len().is_multiple_of(channels) {
            bail!("capture_frame: {} samples is not a multiple of {} channels", samples.len(), channels);
        }
        if self.unpublished.load(Ordering::Acquire) {
            bail!("capture_frame: the track was unpublished");
        }
        let samples_per_channel = (samples.len() / channels) as u32;
        // The library reads the samples by address: they live in the pending call until the callback.
        let buf: Box<[i16]> = samples.into();
        let data_ptr = buf.as_ptr() as u64;
        let (source_handle, sample_rate, num_channels) = (self.source.id(), self.sample_rate, self.num_channels);
        let callback = self
            .room
            .ffi
            .call(Some(Box::new(buf)), |id| {
                ffi_request::Message::CaptureAudioFrame(proto::CaptureAudioFrameRequest {
                    source_handle,
                    buffer: proto::AudioFrameBufferInfo { data_ptr, num_channels, sample_rate, samples_per_channel },
                    request_async_id: Some(id),
                })
            })
            .await?;
        let ffi_event::Message::CaptureAudioFrame(cb) = callback else { bail!("unexpected callback to CaptureAudioFrame") };
        if let Some(e) = cb.error.filter(|e| !e.is_empty()) {
            return Err(anyhow!("capture_frame: {e}"));
        }
        let duration = Duration::from_secs_f64(f64::from(samples_per_channel) / f64::from(sample_rate));
        let now = Instant::now();
        let mut end = self.playout_end.lock().unwrap_or_else(|e| e.into_inner());
        let start = end.filter(|t| *t > now).unwrap_or(now);
        *end = Some(start + duration);
        Ok(())
    }

    /// Drop everything queued (barge-in). Only what WebRTC already took (the current 10 ms frame)
    /// and what is on the wire still reaches the listener: over loopback the last queued audio
    /// arrives ~50 ms after this call, one network latency.
    pub fn clear_queue(&self) -> Result<()> {
        self.room.ffi.request(ffi_request::Message::ClearAudioBuffer(proto::ClearAudioBufferRequest { source_handle: self.source.id() }))?;
        *self.playout_end.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// How much captured audio has not been played yet (estimated from the wall clock: what was
    /// captured minus the real time elapsed; zero after `clear_queue`).
    pub fn queued_duration(&self) -> Duration {
        let end = *self.playout_end.lock().unwrap_or_else(|e| e.into_inner());
        end.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Wait until everything captured has been played out (returns early after `clear_queue`).
    pub async fn wait_for_playout(&self) {
        loop {
            let left = self.queued_duration();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Duration::from_millis(20))).await;
        }
    }

    /// Unpublish the track and wait for it. (Dropping the source unpublishes without waiting.)
    pub async fn unpublish(self) -> Result<()> {
        self.unpublished.store(true, Ordering::Release);
        if !self.room.is_connected() {
            return Ok(());
        }
        let (local, sid) = (self.room.local_participant.id(), self.track_sid.clone());
        let callback = self
            .room
            .ffi
            .call(None, |id| {
                ffi_request::Message::UnpublishTrack(proto::UnpublishTrackRequest {
                    local_participant_handle: local,
                    track_sid: sid,
                    stop_on_unpublish: true,
                    request_async_id: Some(id),
                })
            })
            .await?;
        match callback {
            ffi_event::Message::UnpublishTrack(cb) => match cb.error.filter(|e| !e.is_empty()) {
                Some(e) => Err(anyhow!("unpublish: {e}")),
                None => Ok(()),
            },
            _ => bail!("unexpected callback to UnpublishTrack"),
        }
    }
}

impl Drop for AudioSource {
    fn drop(&mut self) {
        if !self.unpublished.swap(true, Ordering::AcqRel) && self.room.is_connected() {
            let (local, sid) = (self.room.local_participant.id(), self.track_sid.clone());
            self.room.ffi.call_detached(|id| {
                ffi_request::Message::UnpublishTrack(proto::UnpublishTrackRequest {
                    local_participant_handle: local,
                    track_sid: sid,
                    stop_on_unpublish: true,
                    request_async_id: Some(id),
                })
            });
        }
    }
}

/// PCM of a remote audio track, converted by the library to the requested rate and channel count,
/// in 10 ms frames. Dropping it stops the stream.
pub struct AudioStream {
    ffi: Arc<Ffi>,
    rx: mpsc::Receiver<AudioFrame>,
    handle: OwnedHandle,
    dropped: Arc<AtomicU64>,
    // The library ends the stream when the track handle is released: hold it.
    _track: Arc<OwnedHandle>,
}

impl std::fmt::Debug for AudioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStream").field("handle", &self.handle).finish_non_exhaustive()
    }
}

impl AudioStream {
    /// Receive `track` as `sample_rate` Hz, `num_channels` channels (the library resamples and
    /// remixes, e.g. 48 kHz stereo Opus to 16 kHz mono for STT).
    pub fn subscribe(ffi: &Arc<Ffi>, track: &RemoteTrack, sample_rate: u32, num_channels: u32) -> Result<AudioStream> {
        if track.kind != TrackKind::KindAudio {
            bail!("track {} is not an audio track", track.sid);
        }
        if !(8_000..=192_000).contains(&sample_rate) || !(1..=8).contains(&num_channels) {
            bail!("unsupported format {sample_rate} Hz x {num_channels} channels");
        }
        let response = ffi.request(ffi_request::Message::NewAudioStream(proto::NewAudioStreamRequest {
            track_handle: track.handle.id(),
            r#type: proto::AudioStreamType::AudioStreamNative as i32,
            sample_rate: Some(sample_rate),
            num_channels: Some(num_channels),
            ..Default::default()
        }))?;
        let ffi_response::Message::NewAudioStream(r) = response else { bail!("unexpected response to NewAudioStream") };
        let handle = OwnedHandle::new(ffi, r.stream.handle.id);
        if handle.id() == 0 {
            bail!("NewAudioStream: no stream handle");
        }
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_FRAMES);
        let dropped = Arc::new(AtomicU64::new(0));
        // Frames the library sent between creating the stream and this registration (the first
        // 10 ms, if any) are released unread.
        ffi.register_stream(handle.id(), StreamSink { tx, dropped: dropped.clone(), track_sid: track.sid.clone(), room_handle: track.room_handle });
        Ok(AudioStream { ffi: ffi.clone(), rx, handle, dropped, _track: track.handle.clone() })
    }

    /// The next frame; None once the track ended (unsubscribed, participant left, room closed).
    pub async fn recv(&mut self) -> Option<AudioFrame> {
        self.rx.recv().await
    }

    /// Frames dropped because the consumer did not keep up (the channel holds 2 s).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AudioStream {
    fn drop(&mut self) {
        // Stop routing first, then release the stream (its last frames are released unread).
        self.ffi.unregister_stream(self.handle.id());
    }
}
