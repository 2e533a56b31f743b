//! Voice packs and blends.
//!
//! A voice pack is 510 style vectors of 256 floats (little-endian f32, kokoro-js's `voices/*.bin`
//! layout): row `n - 1` is the style for an utterance of `n` phonemes. A blend such as
//! `af_heart:0.7+am_adam:0.3` mixes packs row by row; weights are normalised to sum to 1 and a
//! voice without a weight counts 1 (`af_heart+am_adam` is an even mix).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const ROWS: usize = 510;
pub const STYLE_DIM: usize = 256;
/// Most voices in one blend (a bound on request cost).
pub const MAX_BLEND: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct VoicePack {
    rows: Vec<f32>, // ROWS * STYLE_DIM
}

impl VoicePack {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != ROWS * STYLE_DIM * 4 {
            bail!("a voice pack has {} bytes ({ROWS}x{STYLE_DIM} f32), got {}", ROWS * STYLE_DIM * 4, bytes.len());
        }
        let rows: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if rows.iter().any(|v| !v.is_finite()) {
            bail!("voice pack contains non-finite values");
        }
        Ok(Self { rows })
    }

    /// The style for an utterance of `phonemes` phoneme tokens (padding excluded).
    pub fn style(&self, phonemes: usize) -> &[f32] {
        let r = phonemes.clamp(1, ROWS) - 1;
        &self.rows[r * STYLE_DIM..(r + 1) * STYLE_DIM]
    }
}

/// All voice packs of a directory (`<id>.bin`), by id.
#[derive(Debug, Clone, Default)]
pub struct Voices {
    packs: BTreeMap<String, VoicePack>,
}

/// Why a voice specification was refused: the caller maps these to 400/404.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceError {
    Unknown(String),
    Malformed(String),
}

impl std::fmt::Display for VoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VoiceError::Unknown(v) => write!(f, "unknown voice `{v}`"),
            VoiceError::Malformed(m) => write!(f, "malformed voice: {m}"),
        }
    }
}

impl std::error::Error for VoiceError {}

impl Voices {
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut packs = BTreeMap::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading voices from {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("bin") {
                continue;
            }
            let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let pack = VoicePack::from_bytes(&std::fs::read(&path)?).with_context(|| format!("voice {}", path.display()))?;
            packs.insert(id, pack);
        }
        if packs.is_empty() {
            bail!("no voice packs (*.bin) in {}", dir.display());
        }
        Ok(Self { packs })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.packs.keys().map(|s| s.as_str())
    }

    pub fn len(&self) -> usize {
        self.packs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.packs.contains_key(id)
    }

    /// Resolve a voice or blend specification to one pack.
    pub fn resolve(&self, spec: &str) -> std::result::Result<VoicePack, VoiceError> {
        let parts = parse_blend(spec)?;
        if let [(id, _)] = &parts[..] {
            return self.packs.get(id).cloned().ok_or_else(|| VoiceError::Unknown(id.clone()));
        }
        let total: f32 = parts.iter().map(|(_, w)| w).sum();
        let mut rows = vec![0f32; ROWS * STYLE_DIM];
        for (id, w) in &parts {
            let pack = self.packs.get(id).ok_or_else(|| VoiceError::Unknown(id.clone()))?;
            for (acc, v) in rows.iter_mut().zip(&pack.rows) {
                *acc += v * (w / total);
            }
        }
        Ok(VoicePack { rows })
    }
}

/// `id[:weight](+id[:weight])*` -> (id, weight) pairs. Weights are finite and > 0.
pub fn parse_blend(spec: &str) -> std::result::Result<Vec<(String, f32)>, VoiceError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(VoiceError::Malformed("empty voice".into()));
    }
    let mut out: Vec<(String, f32)> = Vec::new();
    for part in spec.split('+') {
        let part = part.trim();
        let (id, w) = match part.split_once(':') {
            Some((id, w)) => {
                let w: f32 =
                    w.trim().parse().map_err(|_| VoiceError::Malformed(format!("weight `{}` of `{}` is not a number", w.trim(), id.trim())))?;
                (id.trim(), w)
            }
            None => (part, 1.0),
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(VoiceError::Malformed(format!("`{part}` is not a voice id")));
        }
        if !(w.is_finite() && w > 0.0) {
            return Err(VoiceError::Malformed(format!("weight of `{id}` must be a positive number")));
        }
        if out.iter().any(|(o, _)| o == id) {
            return Err(VoiceError::Malformed(format!("`{id}` appears twice")));
        }
        out.push((id.to_string(), w));
    }
    if out.len() > MAX_BLEND {
        return Err(VoiceError::Malformed(format!("at most {MAX_BLEND} voices in a blend")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_parse() {
        assert_eq!(parse_blend("af_heart").unwrap(), vec![("af_heart".to_string(), 1.0)]);
        assert_eq!(parse_blend("af_heart:0.7+am_adam:0.3").unwrap(), vec![("af_heart".into(), 0.7), ("am_adam".into(), 0.3)]);
        assert_eq!(parse_blend(" a + b ").unwrap(), vec![("a".into(), 1.0), ("b".into(), 1.0)]);
        for bad in ["", "+", "a:", "a:x", "a:-1", "a:0", "a:inf", "a+a", "a b", "a:1+", "../etc/passwd", "a:NaN"] {
            assert!(parse_blend(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn blend_is_weighted_mean() {
        let pack = |v: f32| VoicePack { rows: vec![v; ROWS * STYLE_DIM] };
        let voices = Voices { packs: [("a".to_string(), pack(1.0)), ("b".to_string(), pack(3.0))].into_iter().collect() };
        let m = voices.resolve("a:3+b:1").unwrap();
        assert!((m.style(10)[0] - 1.5).abs() < 1e-6);
        assert_eq!(voices.resolve("c"), Err(VoiceError::Unknown("c".into())));
        assert_eq!(voices.resolve("a+c"), Err(VoiceError::Unknown("c".into())));
    }
}
