//! Reading and checking the weights: `silero_vad_16k.safetensors` through candle, or the 16 kHz
//! branch of the official ONNX export (see [`crate::onnx`]), both into candle tensors under the
//! safetensors names, then checked name by name (present, float, exact shape, finite).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Every parameter of the 16 kHz model and its shape (the names of `silero_vad_16k.safetensors`).
pub(crate) const SHAPES: [(&str, &[usize]); 15] = [
    ("stft_conv.weight", &[258, 1, 256]),
    ("conv1.weight", &[128, 129, 3]),
    ("conv1.bias", &[128]),
    ("conv2.weight", &[64, 128, 3]),
    ("conv2.bias", &[64]),
    ("conv3.weight", &[64, 64, 3]),
    ("conv3.bias", &[64]),
    ("conv4.weight", &[128, 64, 3]),
    ("conv4.bias", &[128]),
    ("lstm_cell.weight_ih", &[512, 128]),
    ("lstm_cell.weight_hh", &[512, 128]),
    ("lstm_cell.bias_ih", &[512]),
    ("lstm_cell.bias_hh", &[512]),
    ("final_conv.weight", &[1, 128, 1]),
    ("final_conv.bias", &[1]),
];

/// Either file is ~1.2-2.8 MB; anything far larger is not a Silero VAD model (and is not read).
const MAX_FILE_BYTES: u64 = 64 << 20;

pub(crate) fn expected_shapes() -> HashMap<&'static str, Vec<usize>> {
    SHAPES.iter().map(|(n, s)| (*n, s.to_vec())).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    SafeTensors,
    Onnx,
}

fn format_of(path: &Path, bytes: &[u8]) -> Format {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("onnx") => Format::Onnx,
        Some("safetensors") => Format::SafeTensors,
        // A safetensors file starts with its header length (u64 LE) and the JSON header.
        _ if bytes.len() > 8 && bytes[8] == b'{' => Format::SafeTensors,
        _ => Format::Onnx,
    }
}

/// The file's tensors, on the CPU, under the safetensors names (unchecked).
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let meta = std::fs::metadata(path).with_context(|| format!("Silero VAD weights {}", path.display()))?;
    if !meta.is_file() {
        bail!("Silero VAD weights {}: not a file", path.display());
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!("Silero VAD weights {}: {} bytes is far too large for this model", path.display(), meta.len());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading Silero VAD weights {}", path.display()))?;
    match format_of(path, &bytes) {
        Format::SafeTensors => {
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))
        }
        Format::Onnx => {
            let params = crate::onnx::parse(&bytes, &expected_shapes()).with_context(|| format!("{}", path.display()))?;
            params
                .into_iter()
                .map(|(name, (shape, data))| {
                    let t =
                        Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).map_err(|e| anyhow!("{}: tensor `{name}`: {e}", path.display()))?;
                    Ok((name, t))
                })
                .collect()
        }
    }
}

/// The checked parameters as host f32 vectors (row-major, the shapes of [`SHAPES`]).
pub(crate) struct HostParams(pub HashMap<&'static str, Vec<f32>>);

impl HostParams {
    pub fn get(&self, name: &str) -> &[f32] {
        &self.0[name]
    }
}

/// Check every parameter: present, a float dtype (converted to f32), the exact shape, finite.
/// Extra tensors are ignored.
pub(crate) fn check(tensors: &HashMap<String, Tensor>) -> Result<HostParams> {
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    for (name, shape) in SHAPES {
        let Some(t) = tensors.get(name) else {
            missing.push(name);
            continue;
        };
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            bail!("Silero VAD tensor `{name}` has dtype {:?}, expected a float type", t.dtype());
        }
        if t.dims() != shape {
            bail!("Silero VAD tensor `{name}` has shape {:?}, expected {shape:?}", t.dims());
        }
        let v: Vec<f32> =
            t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(|e| anyhow!("Silero VAD tensor `{name}`: {e}"))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!("Silero VAD tensor `{name}` holds a non-finite value ({}) at element {i}: corrupt weights", v[i]);
        }
        out.insert(name, v);
    }
    if !missing.is_empty() {
        let mut have: Vec<&str> = tensors.keys().map(String::as_str).collect();
        have.sort_unstable();
        bail!("Silero VAD weights lack {} (the file has: {})", missing.join(", "), have.join(", "));
    }
    Ok(HostParams(out))
}
