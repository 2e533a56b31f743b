//! Hugging Face ids resolve through hf-hub's cache layout with HF_HUB_OFFLINE=1 (no network is
//! reachable here, which is exactly the offline case), and a missing file is a clear error.
//! One test per binary: it sets process environment variables.

use std::fs;

use voice_models::Fetcher;

#[test]
fn offline_hugging_face_resolution() {
    let home = std::env::temp_dir().join(format!("hf-home-{}", std::process::id()));
    let repo_dir = home.join("hub").join("models--openai--whisper-tiny.en");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo_dir.join("snapshots").join(commit);
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs").join("main"), commit).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        fs::write(snap.join(f), f).unwrap();
    }
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let fetcher = Fetcher::new(Some(std::env::temp_dir().join("voice-models-unused")));
    let files = ["config.json", "tokenizer.json", "model.safetensors"];
    let r = fetcher.resolve("openai/whisper-tiny.en", true, &files).unwrap();
    assert_eq!(r.dir, snap);
    assert_eq!(fs::read_to_string(r.dir.join("config.json")).unwrap(), "config.json");

    // A revision that is not cached, and a file that is not cached: clear errors, no network.
    let err = fetcher.resolve("openai/whisper-tiny.en@v2", true, &files).unwrap_err();
    assert!(format!("{err:#}").contains("HF_HUB_OFFLINE"), "{err:#}");
    fs::remove_file(snap.join("model.safetensors")).unwrap();
    let err = fetcher.resolve("openai/whisper-tiny.en", true, &files).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("model.safetensors") && msg.contains("HF_HUB_OFFLINE"), "{msg}");
    let _ = fs::remove_dir_all(&home);
}
