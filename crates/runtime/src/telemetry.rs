//! Structured logs: JSON lines on stdout by default (one object per event, fields flattened), or
//! human-readable text with `--log-format text`.

use anyhow::{anyhow, Result};
use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

pub fn init(format: LogFormat, level: &str) -> Result<()> {
    // RUST_LOG, when set, wins over --log-level so a developer can turn on a module quickly.
    let spec = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => v,
        _ => level.to_string(),
    };
    // symphonia logs every unrecognised upload at ERROR; that is the client's mistake, answered
    // with a 400, not a server error.
    let filter = EnvFilter::try_new(format!(
        "{spec},symphonia_core=off,symphonia_bundle_mp3=off,symphonia_format_riff=off,symphonia_format_ogg=off,symphonia_bundle_flac=off"
    ))
    .map_err(|e| anyhow!("invalid log filter `{spec}`: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).with_target(true).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    // A second init in the same process (tests) is harmless.
    let _ = result;
    Ok(())
}
