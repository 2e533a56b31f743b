//! Every committed input of every target — the seed corpus and the crashes the fuzzer found
//! (`regressions/<target>/`, each fixed since) — through the same function the libFuzzer binary
//! runs. A panic here is a regression. Runs in the normal test suite without libFuzzer.

use std::path::Path;

/// What a fuzz target does with one input.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("audio_decode", voice_fuzz::audio_decode),
    ("multipart", voice_fuzz::multipart),
    ("ct2_model", voice_fuzz::ct2_model),
    ("gguf_model", voice_fuzz::gguf_model),
    ("onnx_model", voice_fuzz::onnx_model),
    ("safetensors_model", voice_fuzz::safetensors_model),
    ("g2p_text", voice_fuzz::g2p_text),
    ("livekit_event", voice_fuzz::livekit_event),
];

#[test]
fn corpus_and_regressions_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (name, run) in TARGETS {
        let mut files = vec![];
        for dir in ["corpus", "regressions"] {
            if let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) {
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
        files.sort();
        assert!(!files.is_empty(), "no inputs for target {name}: run `python3 fuzz/make_seeds.py` (scripts/test.sh does)");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{name}: {} panicked", f.display());
            }
            // decode() turns a decoder panic into an error (a service must not die of one), so
            // the check above cannot see it: the catch counts them.
            let caught = voice_runtime::audio::decoder_panics_caught();
            assert_eq!(caught, 0, "{name}: {} made the audio decoder panic (caught inside decode)", f.display());
        }
        eprintln!("{name}: {} inputs", files.len());
        total += files.len();
    }
    // Every target is also a libFuzzer binary.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} has no [[bin]] in fuzz/Cargo.toml");
    }
    eprintln!("{total} inputs replayed");
}
