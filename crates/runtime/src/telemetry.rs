//! Structured logs: JSON lines on stdout by default (one object per event, fields flattened), or
//! human-readable text with `--log-format text`.

use anyhow::{anyhow, Result};
use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

pub fn init(format: LogFormat, level: &str) -> Result<()> {
    // RUST_LOG, when set, wins over --log-level so a developer can turn on a module quickly.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| anyhow!("invalid log filter `{level}`: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    // A second init in the same process (tests) is harmless.
    let _ = result;
    Ok(())
}
