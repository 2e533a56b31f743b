//! HTTPS download with sha256 verification, retries and a progress bar.

use std::{
    fs,
    io::{Read, Write},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{sha256_file, HashingWriter, Package};

/// Whether to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bars on a terminal, one line per file otherwise.
    Auto,
    Never,
}

const ATTEMPTS: u32 = 4;

/// Make sure `dest` holds the package archive with the recorded sha256, downloading it if not.
pub fn fetch_verified(pkg: &Package, dest: &Path, progress: Progress) -> Result<()> {
    if dest.exists() {
        let (sha, _) = sha256_file(dest)?;
        if sha == pkg.sha256 {
            return Ok(());
        }
        eprintln!("{}: cached archive has the wrong sha256, downloading again", pkg.filename);
        fs::remove_file(dest)?;
    }
    let urls = candidate_urls(pkg);
    let mut last_err = None;
    for attempt in 1..=ATTEMPTS {
        for url in &urls {
            match download_once(pkg, url, dest, progress) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    eprintln!("{}: attempt {attempt} from {url} failed: {e:#}", pkg.filename);
                    last_err = Some(e);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2u64.pow(attempt - 1)));
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no download URL")))
        .with_context(|| format!("downloading {} {}=={} ({})", pkg.registry, pkg.name, pkg.version, pkg.filename))
}

/// The recorded URL first; for PyPI also the simple index's link (mirrors may rewrite hosts).
fn candidate_urls(pkg: &Package) -> Vec<String> {
    let mut urls = vec![pkg.url.clone()];
    if pkg.registry == "pypi" {
        if let Ok(index) = std::env::var("PIP_INDEX_URL") {
            urls.push(format!("{}/{}/", index.trim_end_matches('/'), pkg.name));
        }
    }
    urls
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .user_agent(concat!("voice-models/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn download_once(pkg: &Package, url: &str, dest: &Path, progress: Progress) -> Result<()> {
    let url = if url.ends_with('/') { resolve_simple_index(url, &pkg.filename)? } else { url.to_string() };
    let resp = agent().get(&url).call().with_context(|| format!("GET {url}"))?;
    let total = resp.header("content-length").and_then(|v| v.parse::<u64>().ok()).or(pkg.size);
    if let (Some(t), Some(expected)) = (total, pkg.size) {
        if t != expected {
            bail!("server reports {t} bytes, the manifest records {expected}");
        }
    }
    let bar = make_bar(&pkg.filename, total, progress);
    let tmp = dest.with_extension("part");
    let mut out = HashingWriter::new(std::io::BufWriter::new(fs::File::create(&tmp)?));
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).context("reading the response")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    let (sha, len) = out.finish()?;
    bar.finish_and_clear();
    if sha != pkg.sha256 {
        let _ = fs::remove_file(&tmp);
        bail!("sha256 mismatch: got {sha}, the manifest records {} ({len} bytes)", pkg.sha256);
    }
    fs::rename(&tmp, dest)?;
    eprintln!("{}: downloaded {:.1} MB, sha256 ok", pkg.filename, len as f64 / 1e6);
    Ok(())
}

fn resolve_simple_index(index_url: &str, filename: &str) -> Result<String> {
    let body = agent().get(index_url).call()?.into_string()?;
    for part in body.split("href=\"").skip(1) {
        let href = part.split('"').next().unwrap_or("");
        if href.contains(filename) {
            let href = href.split('#').next().unwrap_or(href);
            if href.starts_with("http") {
                return Ok(href.to_string());
            }
            let base = index_url.trim_end_matches('/');
            return Ok(format!("{base}/{href}"));
        }
    }
    bail!("{filename} is not listed at {index_url}")
}

fn make_bar(name: &str, total: Option<u64>, progress: Progress) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    if progress == Progress::Never {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        eprintln!("{name}: downloading{}", total.map(|t| format!(" {:.1} MB", t as f64 / 1e6)).unwrap_or_default());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg:30!} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    bar
}
