//! Bad weights and bad input are errors, never panics: missing, truncated, bit-flipped and
//! arbitrary files of both formats, a missing tensor, a wrong shape or dtype, non-finite weights;
//! windows of the wrong length or with NaN samples (state left unchanged).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use voice_vad::{Compute, SileroVad, VadState, VadStream, ONNX_FILE, SAFETENSORS_FILE};

fn model_dir() -> PathBuf {
    voice_models::Fetcher::new(None).resolve("silero-vad", true, &[]).expect("fetching silero-vad").dir
}

/// A fresh path per call (tests run in parallel threads), keeping `name`'s extension.
fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("voice-vad-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn load_bytes(bytes: &[u8], name: &str) -> anyhow::Result<SileroVad> {
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    let r = SileroVad::load(&path, &Device::Cpu);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    r
}

fn safetensors_map() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(model_dir().join(SAFETENSORS_FILE), &Device::Cpu).unwrap()
}

fn save_and_load(map: &HashMap<String, Tensor>, name: &str) -> anyhow::Result<SileroVad> {
    let path = tmp(name);
    candle_core::safetensors::save(map, &path).unwrap();
    let r = SileroVad::load(&path, &Device::Cpu);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    r
}

fn err_text(r: anyhow::Result<SileroVad>) -> String {
    format!("{:#}", r.expect_err("was accepted"))
}

#[test]
fn missing_file_is_an_error() {
    let e = err_text(SileroVad::load(Path::new("/nonexistent/silero_vad.onnx"), &Device::Cpu));
    assert!(e.contains("/nonexistent/silero_vad.onnx"), "{e}");
    let e = err_text(SileroVad::load_dir(Path::new("/nonexistent"), &Device::Cpu));
    assert!(e.contains("silero_vad.onnx"), "{e}");
}

#[test]
fn truncated_files_are_errors() {
    for file in [ONNX_FILE, SAFETENSORS_FILE] {
        let full = std::fs::read(model_dir().join(file)).unwrap();
        assert!(load_bytes(&full, file).is_ok());
        for frac in [0.0, 0.0001, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999] {
            let n = (full.len() as f64 * frac) as usize;
            let r = load_bytes(&full[..n], file);
            assert!(r.is_err(), "{file} truncated at {n} of {} bytes was accepted", full.len());
        }
        let n = full.len() - 1;
        assert!(load_bytes(&full[..n], file).is_err(), "{file} less its last byte was accepted");
    }
}

/// Bytes flipped anywhere: Ok (a flip inside weight data is just other weights) or an error,
/// never a panic; arbitrary bytes are an error.
#[test]
fn flipped_and_arbitrary_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for file in [ONNX_FILE, SAFETENSORS_FILE] {
        let full = std::fs::read(model_dir().join(file)).unwrap();
        for _ in 0..40 {
            let mut b = full.clone();
            // Mostly the headers / protobuf structure, where a flip changes the most.
            let span = if next() % 2 == 0 { 4096.min(b.len()) } else { b.len() };
            for _ in 0..1 + next() % 6 {
                let i = (next() as usize) % span;
                b[i] ^= (next() as u8) | 1;
            }
            if let Ok(vad) = load_bytes(&b, file) {
                let _ = vad.process(&mut VadState::new(), &[0.1; 512]);
            }
        }
        for len in [0usize, 1, 7, 8, 9, 100, 4096] {
            let b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(load_bytes(&b, file).is_err(), "{len} random bytes as {file} were accepted");
        }
    }
    // A safetensors header claiming an absurd length.
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(load_bytes(&b, SAFETENSORS_FILE).is_err());
}

#[test]
fn missing_tensor_is_named() {
    let mut map = safetensors_map();
    map.remove("lstm_cell.weight_hh");
    let e = err_text(save_and_load(&map, "missing.safetensors"));
    assert!(e.contains("lack lstm_cell.weight_hh"), "{e}");
    // Not a Silero model at all.
    let mut other = HashMap::new();
    other.insert("weight".to_string(), Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap());
    let e = err_text(save_and_load(&other, "other.safetensors"));
    assert!(e.contains("conv1.weight"), "{e}");
}

#[test]
fn wrong_shape_dtype_or_values_are_errors() {
    let base = safetensors_map();

    let mut m = base.clone();
    m.insert("conv1.weight".into(), m["conv1.weight"].narrow(1, 0, 65).unwrap().contiguous().unwrap());
    let e = err_text(save_and_load(&m, "shape.safetensors"));
    assert!(e.contains("conv1.weight") && e.contains("[128, 65, 3]"), "{e}");

    let mut m = base.clone();
    m.insert("conv2.bias".into(), m["conv2.bias"].to_dtype(DType::I64).unwrap());
    let e = err_text(save_and_load(&m, "dtype.safetensors"));
    assert!(e.contains("conv2.bias") && e.contains("dtype"), "{e}");

    let mut m = base.clone();
    let mut v = m["lstm_cell.bias_ih"].to_vec1::<f32>().unwrap();
    v[7] = f32::NAN;
    m.insert("lstm_cell.bias_ih".into(), Tensor::new(v, &Device::Cpu).unwrap());
    let e = err_text(save_and_load(&m, "nan.safetensors"));
    assert!(e.contains("lstm_cell.bias_ih") && e.contains("non-finite"), "{e}");

    // f16 weights are accepted (converted to f32).
    let m: HashMap<String, Tensor> = base.iter().map(|(k, t)| (k.clone(), t.to_dtype(DType::F16).unwrap())).collect();
    let vad = SileroVad::from_tensors(&m, &Device::Cpu, Compute::HostLoops).unwrap();
    assert!(vad.process(&mut VadState::new(), &[0.0; 512]).unwrap() < 0.1);
}

#[test]
fn bad_windows_are_errors_and_leave_the_state_alone() {
    let vad = SileroVad::load_dir(&model_dir(), &Device::Cpu).unwrap();
    let mut state = VadState::new();
    let speechy: Vec<f32> = (0..512).map(|i| (i as f32 * 0.3).sin() * 0.3).collect();
    vad.process(&mut state, &speechy).unwrap();
    let (h, c, ctx) = (state.hidden().to_vec(), state.cell().to_vec(), state.context().to_vec());
    for len in [0, 1, 511, 513, 1024] {
        let e = vad.process(&mut state, &vec![0.0; len]).unwrap_err().to_string();
        assert!(e.contains("512"), "{e}");
    }
    let mut bad = speechy.clone();
    bad[100] = f32::NAN;
    assert!(vad.process(&mut state, &bad).is_err());
    bad[100] = f32::INFINITY;
    assert!(vad.process(&mut state, &bad).is_err());
    assert_eq!((state.hidden(), state.cell(), state.context()), (&h[..], &c[..], &ctx[..]));

    // reset() is a fresh state.
    let fresh = vad.process(&mut VadState::new(), &speechy).unwrap();
    state.reset();
    assert_eq!(vad.process(&mut state, &speechy).unwrap(), fresh);

    // The stream refuses a chunk with a NaN as a whole.
    let mut stream = VadStream::new(vad);
    stream.push(&speechy[..300]).unwrap();
    let mut chunk = vec![0.0f32; 1000];
    chunk[900] = f32::NAN;
    assert!(stream.push(&chunk).is_err());
    assert_eq!((stream.pending(), stream.windows()), (300, 0));
}
