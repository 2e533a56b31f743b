//! `voice-agent` as a library: the audio loop and its parts, so tests drive a conversation
//! through the in-memory transport with the real services. The binary (main.rs) adds the
//! LiveKit transport, dispatch, the token endpoint and the frontend.

pub mod backends;
pub mod conversation;
pub mod dispatch;
pub mod end_of_turn;
pub mod grpc;
pub mod http;
pub mod livekit;
pub mod memory;
pub mod metrics;
pub mod reply;
pub mod sentences;
pub mod token;
pub mod transport;
pub mod turn;
pub mod vad;
