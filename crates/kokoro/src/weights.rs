//! Kokoro parameters by PyTorch name (weight norm folded), from either source:
//! the int8 ONNX export ([`crate::onnx`]) or the upstream checkpoint (`kokoro-v1_0.pth`, a dict
//! of five state dicts whose keys carry a `module.` prefix, or a safetensors file with the same
//! flattened names).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone)]
pub struct Weights {
    map: HashMap<String, Tensor>,
}

impl Weights {
    pub fn from_map(map: HashMap<String, Tensor>) -> Self {
        Self { map }
    }

    /// From the int8 ONNX export, dequantized to f32 on `device`.
    pub fn from_onnx(path: &Path, device: &Device) -> Result<Self> {
        let host = crate::onnx::load(path)?;
        let mut map = HashMap::with_capacity(host.len());
        for (name, t) in host {
            map.insert(name, Tensor::from_vec(t.data, t.shape, device)?);
        }
        Ok(Self { map })
    }

    /// From the upstream checkpoint: `.pth` (PyTorch pickle) or `.safetensors`.
    pub fn from_checkpoint(path: &Path, device: &Device) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut raw: Vec<(String, Tensor)> = Vec::new();
        if ext == "safetensors" {
            raw.extend(candle_core::safetensors::load(path, device)?);
        } else {
            // The checkpoint is {bert, bert_encoder, predictor, text_encoder, decoder} -> state dict.
            for top in ["bert", "bert_encoder", "predictor", "text_encoder", "decoder"] {
                let part =
                    candle_core::pickle::read_all_with_key(path, Some(top)).with_context(|| format!("reading `{top}` from {}", path.display()))?;
                for (k, v) in part {
                    let k = k.strip_prefix("module.").unwrap_or(&k).to_string();
                    raw.push((format!("{top}.{k}"), v.to_device(device)?));
                }
            }
        }
        let mut map: HashMap<String, Tensor> = HashMap::new();
        let mut gs: HashMap<String, Tensor> = HashMap::new();
        let mut vs: HashMap<String, Tensor> = HashMap::new();
        for (k, v) in raw {
            let v = v.to_dtype(DType::F32)?;
            if let Some(base) = k.strip_suffix(".weight_g") {
                gs.insert(base.to_string(), v);
            } else if let Some(base) = k.strip_suffix(".weight_v") {
                vs.insert(base.to_string(), v);
            } else {
                map.insert(k, v);
            }
        }
        // weight = g * v / ||v||, the norm over every dimension but the first (weight_norm dim 0).
        for (base, v) in vs {
            let g = gs.remove(&base).ok_or_else(|| anyhow!("`{base}.weight_v` without weight_g"))?;
            let dims = v.dims().to_vec();
            let norm = v.sqr()?.flatten_from(1)?.sum_keepdim(1)?.sqrt()?;
            let shape: Vec<usize> = std::iter::once(dims[0]).chain(std::iter::repeat_n(1, dims.len() - 1)).collect();
            let w = v.broadcast_mul(&g.reshape(shape.clone())?)?.broadcast_div(&norm.reshape(shape)?)?;
            map.insert(format!("{base}.weight"), w);
        }
        if !gs.is_empty() {
            bail!("weight_g without weight_v: {:?}", gs.keys().collect::<Vec<_>>());
        }
        Ok(Self { map })
    }

    /// A parameter that must exist with exactly this shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.map.get(name).ok_or_else(|| anyhow!("parameter `{name}` missing from the weights"))?;
        if t.dims() != shape {
            bail!("parameter `{name}` has shape {:?}, expected {shape:?}", t.dims());
        }
        Ok(t.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_weight_norm_is_folded() {
        // weight_norm(dim=0): w = g * v / ||v|| with the norm over all but the first dimension.
        let dev = Device::Cpu;
        let v = Tensor::new(&[[[3f32], [4.]], [[0.], [2.]]], &dev).unwrap(); // (2, 2, 1): norms 5 and 2
        let g = Tensor::new(&[[[10f32]], [[1.]]], &dev).unwrap(); // (2, 1, 1)
        let b = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
        let dir = std::env::temp_dir().join(format!("kokoro-wn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kokoro-v1_0.safetensors");
        let tensors: HashMap<String, Tensor> =
            [("decoder.x.weight_v".to_string(), v), ("decoder.x.weight_g".to_string(), g), ("decoder.x.bias".to_string(), b)].into_iter().collect();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let ws = Weights::from_checkpoint(&path, &dev).unwrap();
        let w = ws.get("decoder.x.weight", &[2, 2, 1]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w, vec![6., 8., 0., 1.]);
        assert!(ws.get("decoder.x.bias", &[2]).is_ok());
        assert!(ws.get("decoder.x.bias", &[3]).is_err(), "shape mismatch is an error");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
