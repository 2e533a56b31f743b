//! One command-line shape for every service binary.
//!
//! Precedence, highest first: command-line flag, environment variable (`<PREFIX>_<FLAG>`, e.g.
//! `VOICE_STT_GRPC_PORT`), the optional TOML file (`--config`, keys are flag names with `-` or `_`),
//! then the built-in default. The environment names are derived from the flag names at run time so
//! that every flag, including a service's own, gets one without repeating it by hand.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, ValueEnum};

use crate::device::DeviceSpec;

/// What a service tells the runtime about itself: names and defaults.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Short name used in metric names and logs: `stt`, `tts`, `llm`, `embed`, `agent`.
    pub name: &'static str,
    /// Binary name, e.g. `voice-stt`.
    pub binary: &'static str,
    /// Environment prefix, e.g. `VOICE_STT`.
    pub env_prefix: &'static str,
    pub default_port: u16,
    pub default_grpc_port: u16,
    pub default_model: &'static str,
    /// The service's share of the GPU in the documented split (e.g. `4GB` for Whisper).
    pub default_gpu_memory_budget: &'static str,
    /// Largest accepted HTTP request body by default (`--max-body-bytes`).
    pub default_max_body_bytes: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Flags every service binary accepts.
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Address the HTTP and gRPC listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// HTTP port (OpenAI-compatible API, /healthz, /readyz, /metrics).
    #[arg(long, default_value = "0")]
    pub port: u16,

    /// gRPC port (the contracts under proto/). 0 picks a free port.
    #[arg(long, default_value = "0")]
    pub grpc_port: u16,

    /// Compute device: auto (CUDA if built with it and a GPU initialises, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,

    /// Model id from models/manifest.toml, a Hugging Face repo (org/name) or a local directory.
    #[arg(long, default_value = "")]
    pub model: String,

    /// GPU memory this service may use, e.g. 4GB, 3GiB, 512MB; 0 means no limit. A model whose
    /// estimated footprint exceeds it is refused on the GPU and runs on the CPU.
    #[arg(long, default_value = "", value_parser = parse_bytes)]
    pub gpu_memory_budget: u64,

    /// Where fetched models live (default: $VOICE_MODELS_DIR, else $XDG_CACHE_HOME/voice-ai/models).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,

    /// Fetch a model id that is not in the cache on first use (off: fail instead).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fetch_missing: bool,

    /// Log format on stdout.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or voice_stt=debug,info.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Model executions that run at the same time.
    #[arg(long, default_value_t = 1)]
    pub max_concurrency: usize,

    /// Requests allowed to wait for a model slot; beyond this the service answers 429 + Retry-After.
    #[arg(long, default_value_t = 32)]
    pub max_queue: usize,

    /// Largest accepted HTTP request body, e.g. 25MB.
    #[arg(long, default_value = "", value_parser = parse_bytes)]
    pub max_body_bytes: u64,

    /// Wall-clock limit for one request (reading the body included), e.g. 120s, 2m.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish before the process exits.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Bearer keys the API accepts (repeat the flag; the environment variable takes a
    /// comma-separated list). None configured: the API is open. /healthz, /readyz, /metrics stay open.
    #[arg(long = "api-key", value_delimiter = ',')]
    pub api_key: Vec<crate::auth::Secret>,

    /// File with accepted keys, one per line (`#` comments): e.g. a mounted Kubernetes Secret.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,

    /// PEM certificate chain: with --tls-key, both ports serve TLS only (rustls; HTTP/1.1 on the
    /// HTTP port, h2 on the gRPC port).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A client must send its request headers (and finish the TLS handshake) within this time, or
    /// the connection is closed: slow-loris clients and idle keep-alive connections.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Open connections per port; beyond this new ones wait in the kernel's accept queue.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Requests per second each client may make (token bucket; 0 = no limit). Beyond it: 429 +
    /// Retry-After. A client is its bearer key, else its address (see --trust-forwarded-for).
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit: f64,

    /// Requests a client may make at once before --rate-limit applies (0 = one second's worth).
    #[arg(long, default_value_t = 0)]
    pub rate_limit_burst: u32,

    /// Identify clients without a key by the last X-Forwarded-For address (behind an ingress
    /// that sets it); off: the peer address.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Optional TOML file with defaults for any of these flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Parse the command line of a service. `A` is the service's own `clap::Parser` struct, which
/// flattens [`ServiceArgs`] and adds its own flags.
pub fn parse<A: CommandFactory + FromArgMatches>(spec: &ServiceSpec) -> Result<A> {
    match parse_from::<A, _, _>(spec, std::env::args_os()) {
        Ok(a) => Ok(a),
        // Help, version and usage errors print the usual clap way and exit with clap's code.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_err) => clap_err.exit(),
            Err(other) => Err(other),
        },
    }
}

pub fn parse_from<A, I, T>(spec: &ServiceSpec, args: I) -> Result<A>
where
    A: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let config_path = find_config_path(&args, spec.env_prefix);
    let file_values = match &config_path {
        Some(p) => load_toml_defaults(p)?,
        None => BTreeMap::new(),
    };

    let mut cmd = A::command().name(spec.binary);
    let known: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
    for key in file_values.keys() {
        if !known.iter().any(|k| k == key) {
            bail!(
                "{}: unknown key `{}` in config file {} (known: {})",
                spec.binary,
                key,
                config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                known.join(", ")
            );
        }
    }
    let builtin: BTreeMap<&str, String> = [
        ("port", spec.default_port.to_string()),
        ("grpc_port", spec.default_grpc_port.to_string()),
        ("model", spec.default_model.to_string()),
        ("gpu_memory_budget", spec.default_gpu_memory_budget.to_string()),
        ("max_body_bytes", spec.default_max_body_bytes.to_string()),
    ]
    .into_iter()
    .collect();

    cmd = cmd.mut_args(|arg| {
        let id = arg.get_id().to_string();
        if id == "help" || id == "version" {
            return arg;
        }
        let env = format!("{}_{}", spec.env_prefix, id.to_uppercase());
        let mut arg = arg.env(env);
        if let Some(v) = file_values.get(&id) {
            arg = arg.default_value(v.clone());
        } else if let Some(v) = builtin.get(id.as_str()) {
            arg = arg.default_value(v.clone());
        }
        arg
    });
    let matches = cmd.try_get_matches_from(args)?;
    Ok(A::from_arg_matches(&matches)?)
}

fn find_config_path(args: &[OsString], prefix: &str) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(format!("{prefix}_CONFIG")).map(PathBuf::from)
}

/// Read a flat TOML table into flag-id -> value strings.
fn load_toml_defaults(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("config file {}: key `{k}` must be a string, number or boolean, got {}", path.display(), other.type_str()),
        };
        out.insert(k.replace('-', "_"), value);
    }
    Ok(out)
}

/// Parse a byte size: `4GB` (10^9), `4GiB` (2^30), `512MB`, `1024`, `0`. Empty means 0.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(0);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 4GB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("size `{s}` is out of range"));
    }
    Ok(v as u64)
}

/// Parse a duration: `30s`, `250ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 250ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{s}`")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestArgs {
        #[command(flatten)]
        service: ServiceArgs,
        /// A service-specific flag.
        #[arg(long, default_value_t = 7)]
        beams: u32,
    }

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "t",
            binary: "voice-t",
            env_prefix: "VOICE_CLITEST",
            default_port: 8001,
            default_grpc_port: 9001,
            default_model: "m",
            default_gpu_memory_budget: "4GB",
            default_max_body_bytes: "25MB",
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("4GB").unwrap(), 4_000_000_000);
        assert_eq!(parse_bytes("3GiB").unwrap(), 3 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert!(parse_bytes("4 parsecs").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_env_file_and_flags_in_order() {
        let dir = std::env::temp_dir().join(format!("voice-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("svc.toml");
        std::fs::write(&cfg, "grpc-port = 9100\nbeams = 3\nmodel = \"from-file\"\n").unwrap();

        let a: TestArgs = parse_from(&spec(), ["voice-t"]).unwrap();
        assert_eq!(a.service.port, 8001);
        assert_eq!(a.service.gpu_memory_budget, 4_000_000_000);
        assert_eq!(a.beams, 7);

        let c = cfg.to_string_lossy().to_string();
        let a: TestArgs = parse_from(&spec(), ["voice-t", "--config", &c]).unwrap();
        assert_eq!(a.service.grpc_port, 9100);
        assert_eq!(a.beams, 3);
        assert_eq!(a.service.model, "from-file");

        // The environment beats the file; the flag beats the environment.
        std::env::set_var("VOICE_CLITEST_MODEL", "from-env");
        let a: TestArgs = parse_from(&spec(), ["voice-t", "--config", &c]).unwrap();
        assert_eq!(a.service.model, "from-env");
        let a: TestArgs = parse_from(&spec(), ["voice-t", "--config", &c, "--model", "from-flag"]).unwrap();
        assert_eq!(a.service.model, "from-flag");
        std::env::remove_var("VOICE_CLITEST_MODEL");

        std::fs::write(&cfg, "no_such_flag = 1\n").unwrap();
        let err = parse_from::<TestArgs, _, _>(&spec(), ["voice-t", "--config", &c]).unwrap_err();
        assert!(err.to_string().contains("no_such_flag"), "{err}");
    }
}
