//! What every voice-ai service shares, so that no service repeats it: the command line and config
//! ([`cli`]), device choice with CPU fallback ([`device`]), logs ([`telemetry`]), metrics
//! ([`metrics`]), OpenAI-shaped errors ([`error`]), admission control ([`queue`], [`ratelimit`]), the HTTP + gRPC
//! server with health, readiness and graceful shutdown ([`server`]) behind TLS and connection limits
//! ([`transport`]), API keys ([`auth`]), and audio decoding ([`audio`]).

pub mod audio;
pub mod auth;
pub mod cli;
pub mod device;
pub mod error;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod server;
pub mod telemetry;
pub mod transport;

pub use cli::{ServiceArgs, ServiceSpec};
pub use device::{ChosenDevice, DeviceSpec, DeviceState, ModelSlot};
pub use error::ApiError;
pub use metrics::Metrics;
pub use queue::WorkQueue;
pub use server::{serve, Listeners, ServiceContext};
