//! One function per fuzz target: what it does with the input. The libFuzzer binaries in
//! `fuzz_targets/` call these; `tests/replay.rs` calls them on the seed corpus (make_seeds.py) and on every
//! crash found so far (`regressions/`), so a fixed bug stays fixed without libFuzzer.
//!
//! The rule each checks: arbitrary bytes give `Ok` or `Err`, never a panic, an abort, or an
//! allocation the input cannot justify (libFuzzer runs with `-rss_limit_mb` and `-malloc_limit_mb`).

use std::{collections::HashMap, io::Cursor, sync::OnceLock};

/// `voice_runtime::audio`: container sniffing, WAV header checks, symphonia decoding, resampling.
pub fn audio_decode(data: &[u8]) {
    let _ = voice_runtime::audio::decode(data, 30.0);
    let _ = voice_runtime::audio::decode_to_rate(data, 16_000, 30.0);
}

/// axum's `Multipart` (multer) over an arbitrary body, reading every field like voice-stt's
/// upload handler, with the first input byte choosing among a few boundaries.
pub fn multipart(data: &[u8]) {
    use axum::extract::{FromRequest, Multipart};
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"));
    let (boundary, body) = match data.split_first() {
        Some((b, rest)) => (["X", "----voice", "a-b_c", "z"][*b as usize % 4], rest.to_vec()),
        None => ("X", vec![]),
    };
    let req = match http::Request::builder()
        .method("POST")
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(axum::body::Body::from(body))
    {
        Ok(r) => r,
        Err(_) => return,
    };
    rt.block_on(async move {
        let Ok(mut form) = Multipart::from_request(req, &()).await else { return };
        while let Ok(Some(field)) = form.next_field().await {
            let _ = (field.name().map(str::len), field.file_name().map(str::len), field.content_type().map(str::len));
            if field.bytes().await.is_err() {
                break;
            }
        }
    });
}

/// voice-whisper's CTranslate2 `model.bin` reader: the index, then every variable read as a
/// tensor and as a scalar.
pub fn ct2_model(data: &[u8]) {
    let Ok(index) = voice_whisper::ct2::Ct2Index::parse(data) else { return };
    let mut names: Vec<&String> = index.vars.keys().chain(index.aliases.keys()).collect();
    names.sort();
    for name in names {
        let _ = index.tensor(data, name, candle_core::DType::F32);
        let _ = index.scalar_int(data, name);
    }
}

/// candle's GGUF reader, then what voice-textgen builds from it: the tokenizer from the
/// metadata and the CPU llama (tensor shapes and types checked against the file).
pub fn gguf_model(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let Ok(content) = voice_textgen::model::read_gguf(&mut cursor) else { return };
    let _ = voice_textgen::TextTokenizer::from_gguf(&content.metadata);
    if voice_textgen::cpu_llama::can_load(&content) {
        let _ = voice_textgen::cpu_llama::CpuLlama::load(&content, &mut cursor, 64);
    }
}

/// The shared ONNX reader (voice-onnx: graph, attributes, subgraphs, every tensor checked) and
/// the models' mappings on top of it: Kokoro's weights, Smart Turn's graph walk (and a forward
/// pass when a graph passes it).
pub fn onnx_model(data: &[u8]) {
    if let Ok(model) = voice_onnx::Model::parse(data.to_vec()) {
        if let Ok(g) = model.graph() {
            for g in g.all_graphs() {
                for name in g.tensor_names().collect::<Vec<_>>() {
                    if let Ok(t) = g.tensor(name) {
                        let _ = t.to_f32();
                    }
                }
            }
        }
    }
    let _ = voice_kokoro::onnx::parse(data.to_vec());
    if let Ok(m) = voice_smart_turn::SmartTurn::from_bytes(data.to_vec(), &candle_core::Device::Cpu) {
        let _ = m.probability(&[0.1; 1600]);
    }
}

/// candle's safetensors reader, then the Silero VAD built from the tensors (names, shapes) and run
/// on two windows, with both compute paths.
pub fn safetensors_model(data: &[u8]) {
    let Ok(tensors) = candle_core::safetensors::load_buffer(data, &candle_core::Device::Cpu) else { return };
    let tensors: HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
    for compute in [voice_vad::Compute::HostLoops, voice_vad::Compute::CandleOps] {
        if let Ok(vad) = voice_vad::SileroVad::from_tensors(&tensors, &candle_core::Device::Cpu, compute) {
            let _ = vad.process_all(&[0.25; 1024]);
        }
    }
}

/// voice-g2p: normalisation, sentence split, lexicon lookup, stress and chunking of any UTF-8
/// text. The lexicons come from the model cache when present (`$VOICE_MODELS_DIR/kokoro-82m`),
/// else normalisation only. espeak-ng is pointed at a missing program: its error path, not a
/// process per input.
pub fn g2p_text(data: &[u8]) {
    static G2P: OnceLock<Option<voice_g2p::G2p>> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = voice_g2p::normalize(text);
    let _ = voice_g2p::split_sentences(text, text, 1);
    let g2p = G2P.get_or_init(|| {
        let dir = std::path::PathBuf::from(std::env::var_os("VOICE_MODELS_DIR")?).join("kokoro-82m");
        voice_g2p::G2p::load(&dir, voice_g2p::Variant::Us).ok().map(|g| g.with_espeak_program("/nonexistent/espeak-ng"))
    });
    if let Some(g) = g2p {
        let _ = g.phonemize(text);
        let _ = g.chunks(text, 510);
        let _ = g.pieces(text, 510, 16);
    }
}

/// voice-livekit's handling of an event from liblivekit_ffi (protobuf decode + routing).
pub fn livekit_event(data: &[u8]) {
    voice_livekit::Ffi::dispatch_detached(data);
}
