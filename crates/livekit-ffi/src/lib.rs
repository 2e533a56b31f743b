//! LiveKit rooms through LiveKit's own native client core.
//!
//! `liblivekit_ffi.so` (from the PyPI wheel `livekit==1.2.0`, livekit-ffi build 0.13.x; the model
//! fetcher installs it as model id `livekit-ffi`) is the Rust SDK that LiveKit's Python and Node
//! agents run on, with libwebrtc inside. It is loaded at run time with `libloading` and driven with
//! its protobuf protocol: requests go through `livekit_ffi_request`, answers to asynchronous
//! requests and room/audio events arrive on a callback on the library's threads. The project's own
//! subset of that protocol is in `proto/livekit-ffi/` (same package and field numbers).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use voice_livekit::{AudioStream, Ffi, Room, RoomEvent, RoomOptions};
//! let ffi = Ffi::load(&Ffi::locate()?)?;
//! let (room, mut events) = Room::connect(&ffi, "ws://127.0.0.1:7880", "<jwt>", RoomOptions::default()).await?;
//! let speaker = room.publish_audio("agent", 48_000, 1).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         RoomEvent::TrackSubscribed { track, .. } => {
//!             // The library resamples: 10 ms frames of 16 kHz mono for STT.
//!             let mut mic = AudioStream::subscribe(&ffi, &track, 16_000, 1)?;
//!             tokio::spawn(async move { while let Some(_frame) = mic.recv().await { /* VAD, STT */ } });
//!         }
//!         RoomEvent::DataReceived { topic, payload, .. } if topic == "interrupt" => {
//!             speaker.clear_queue()?; // barge-in: drop the queued speech at once
//!             # let _ = payload;
//!         }
//!         RoomEvent::ParticipantDisconnected { .. } | RoomEvent::Disconnected { .. } => break,
//!         _ => {}
//!     }
//! }
//! speaker.capture_frame(&[0i16; 480]).await?; // 10 ms at 48 kHz (TTS output)
//! room.publish_data(br#"{"state":"done"}"#, "agent-state", true).await?;
//! room.disconnect().await?;
//! # Ok(()) }
//! ```
//!
//! Threading: the library calls back on its own threads. The callback never blocks: it decodes the
//! event, completes the waiting request (by async id) or hands the event to the room's/stream's
//! channel, and returns. Bad messages are logged and dropped, never a panic.

mod audio;
mod ffi;
mod room;

/// The generated subset of LiveKit's FFI protocol (`livekit.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/livekit.proto.rs"));
}

pub use audio::{AudioFrame, AudioSource, AudioStream, DEFAULT_QUEUE_SIZE_MS};
pub use ffi::{Ffi, SUPPORTED_FFI_VERSION};
pub use proto::{ConnectionState, DisconnectReason, ParticipantKind, TrackKind, TrackSource};
pub use room::{RemoteTrack, Room, RoomEvent, RoomOptions};
