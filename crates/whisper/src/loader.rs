//! From a model directory to a [`Whisper`] on a device. Two layouts are recognised:
//! - CTranslate2 (`model.bin`, or `model.bin.part1`, `.part2`, ... concatenated) with its
//!   `config.json` (suppress ids) and `tokenizer.json`;
//! - Hugging Face (`config.json`, `model.safetensors` or sharded `model-*.safetensors`,
//!   `tokenizer.json`).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::{ct2::Ct2Index, model::WhisperConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    CTranslate2,
    Safetensors,
}

/// The weight files of a model directory and their format.
pub fn weight_files(dir: &Path) -> Result<(Format, Vec<PathBuf>)> {
    let single = dir.join("model.bin");
    if single.is_file() {
        return Ok((Format::CTranslate2, vec![single]));
    }
    let mut parts = Vec::new();
    for i in 1.. {
        let p = dir.join(format!("model.bin.part{i}"));
        if !p.is_file() {
            break;
        }
        parts.push(p);
    }
    if !parts.is_empty() {
        return Ok((Format::CTranslate2, parts));
    }
    let mut st: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading model directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    st.sort();
    if !st.is_empty() {
        return Ok((Format::Safetensors, st));
    }
    bail!("{} holds no Whisper weights (model.bin, model.bin.part*, or *.safetensors)", dir.display())
}

/// Bytes the weights take on disk (f16 for the registry models), for memory estimates.
pub fn weight_bytes(dir: &Path) -> Result<u64> {
    let (_, files) = weight_files(dir)?;
    files.iter().map(|f| Ok(fs::metadata(f)?.len())).sum()
}

/// CTranslate2's own config.json (not Hugging Face's).
#[derive(Debug, Deserialize, Default)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<u32>,
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
}

pub struct Loaded<'a> {
    pub config: WhisperConfig,
    pub vb: VarBuilder<'a>,
}

pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Loaded<'static>> {
    let (format, files) = weight_files(dir)?;
    match format {
        Format::CTranslate2 => load_ct2(dir, &files, dtype, device),
        Format::Safetensors => {
            let cfg_path = dir.join("config.json");
            let config: WhisperConfig = serde_json::from_slice(&fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?)
                .with_context(|| format!("parsing {} as a Hugging Face Whisper config", cfg_path.display()))?;
            // Safety: the files are memory-mapped read-only; the cache does not rewrite them in place.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
            Ok(Loaded { config, vb })
        }
    }
}

fn load_ct2(dir: &Path, files: &[PathBuf], dtype: DType, device: &Device) -> Result<Loaded<'static>> {
    let (config, tensors) = ct2_tensors(dir, files, dtype)?;
    Ok(Loaded { config, vb: VarBuilder::from_tensors(tensors, dtype, device) })
}

/// The CTranslate2 model as Hugging Face-named CPU tensors, and its config.
pub fn ct2_tensors(dir: &Path, files: &[PathBuf], dtype: DType) -> Result<(WhisperConfig, HashMap<String, Tensor>)> {
    // One buffer for the whole file (parts concatenated in order).
    let bytes: Vec<u8> = if files.len() == 1 {
        fs::read(&files[0]).with_context(|| format!("reading {}", files[0].display()))?
    } else {
        let mut v = Vec::new();
        for f in files {
            v.extend_from_slice(&fs::read(f).with_context(|| format!("reading {}", f.display()))?);
        }
        v
    };
    let idx = Ct2Index::parse(&bytes).context("parsing the CTranslate2 model.bin")?;
    ensure!(idx.spec == "WhisperSpec", "model.bin holds a {} model, not Whisper", idx.spec);
    let ct2cfg: Ct2Config = match fs::read(dir.join("config.json")) {
        Ok(b) => serde_json::from_slice(&b).context("parsing the CTranslate2 config.json")?,
        Err(_) => Ct2Config::default(),
    };

    let dims = |name: &str| -> Result<Vec<usize>> { Ok(idx.get(name).ok_or_else(|| anyhow!("model.bin lacks `{name}`"))?.dims.clone()) };
    let conv1 = dims("encoder/conv1/weight")?;
    ensure!(conv1.len() == 3, "encoder/conv1/weight must be 3-D");
    let d = conv1[0];
    let count_layers = |prefix: &str| (0..).take_while(|i| idx.get(&format!("{prefix}/layer_{i}/self_attention/linear_0/weight")).is_some()).count();
    let enc_heads = idx.scalar_int(&bytes, "encoder/num_heads").unwrap_or(d as i64 / 64) as usize;
    let dec_heads = idx.scalar_int(&bytes, "decoder/num_heads").unwrap_or(enc_heads as i64) as usize;
    ensure!(enc_heads > 0 && d % enc_heads == 0 && dec_heads > 0 && d % dec_heads == 0, "implausible head counts");
    let config = WhisperConfig {
        num_mel_bins: conv1[1],
        max_source_positions: dims("encoder/position_encodings/encodings")?[0],
        d_model: d,
        encoder_attention_heads: enc_heads,
        encoder_layers: count_layers("encoder"),
        vocab_size: dims("decoder/embeddings/weight")?[0],
        max_target_positions: dims("decoder/position_encodings/encodings")?[0],
        decoder_attention_heads: dec_heads,
        decoder_layers: count_layers("decoder"),
        suppress_tokens: ct2cfg.suppress_ids,
        begin_suppress_tokens: ct2cfg.suppress_ids_begin,
    };

    let mut t: HashMap<String, Tensor> = HashMap::new();
    let get = |name: &str| idx.tensor(&bytes, name, dtype);
    let mut put = |dst: String, src: Tensor| {
        t.insert(dst, src);
    };
    put("model.encoder.conv1.weight".into(), get("encoder/conv1/weight")?);
    put("model.encoder.conv1.bias".into(), get("encoder/conv1/bias")?);
    put("model.encoder.conv2.weight".into(), get("encoder/conv2/weight")?);
    put("model.encoder.conv2.bias".into(), get("encoder/conv2/bias")?);
    put("model.encoder.embed_positions.weight".into(), get("encoder/position_encodings/encodings")?);
    put("model.decoder.embed_tokens.weight".into(), get("decoder/embeddings/weight")?);
    put("model.decoder.embed_positions.weight".into(), get("decoder/position_encodings/encodings")?);
    for (dst, src) in [("model.encoder.layer_norm", "encoder/layer_norm"), ("model.decoder.layer_norm", "decoder/layer_norm")] {
        put(format!("{dst}.weight"), get(&format!("{src}/gamma"))?);
        put(format!("{dst}.bias"), get(&format!("{src}/beta"))?);
    }
    let linear = |t: &mut HashMap<String, Tensor>, dst: &str, src: &str| -> Result<()> {
        t.insert(format!("{dst}.weight"), get(&format!("{src}/weight"))?);
        t.insert(format!("{dst}.bias"), get(&format!("{src}/bias"))?);
        Ok(())
    };
    let ln = |t: &mut HashMap<String, Tensor>, dst: &str, src: &str| -> Result<()> {
        t.insert(format!("{dst}.weight"), get(&format!("{src}/gamma"))?);
        t.insert(format!("{dst}.bias"), get(&format!("{src}/beta"))?);
        Ok(())
    };
    // Self-attention: linear_0 is q|k|v stacked on the output axis (k's bias is zero).
    let self_attn = |t: &mut HashMap<String, Tensor>, dst: &str, src: &str| -> Result<()> {
        let w = get(&format!("{src}/linear_0/weight"))?;
        let b = get(&format!("{src}/linear_0/bias"))?;
        let chunk = |x: &Tensor, i: usize| x.narrow(0, i * d, d).and_then(|v| v.contiguous());
        t.insert(format!("{dst}.q_proj.weight"), chunk(&w, 0)?);
        t.insert(format!("{dst}.q_proj.bias"), chunk(&b, 0)?);
        t.insert(format!("{dst}.k_proj.weight"), chunk(&w, 1)?);
        t.insert(format!("{dst}.v_proj.weight"), chunk(&w, 2)?);
        t.insert(format!("{dst}.v_proj.bias"), chunk(&b, 2)?);
        t.insert(format!("{dst}.out_proj.weight"), get(&format!("{src}/linear_1/weight"))?);
        t.insert(format!("{dst}.out_proj.bias"), get(&format!("{src}/linear_1/bias"))?);
        Ok(())
    };
    // Cross-attention: linear_0 is q, linear_1 is k|v stacked, linear_2 the output.
    let cross_attn = |t: &mut HashMap<String, Tensor>, dst: &str, src: &str| -> Result<()> {
        t.insert(format!("{dst}.q_proj.weight"), get(&format!("{src}/linear_0/weight"))?);
        t.insert(format!("{dst}.q_proj.bias"), get(&format!("{src}/linear_0/bias"))?);
        let w = get(&format!("{src}/linear_1/weight"))?;
        let b = get(&format!("{src}/linear_1/bias"))?;
        t.insert(format!("{dst}.k_proj.weight"), w.narrow(0, 0, d)?.contiguous()?);
        t.insert(format!("{dst}.v_proj.weight"), w.narrow(0, d, d)?.contiguous()?);
        t.insert(format!("{dst}.v_proj.bias"), b.narrow(0, d, d)?.contiguous()?);
        t.insert(format!("{dst}.out_proj.weight"), get(&format!("{src}/linear_2/weight"))?);
        t.insert(format!("{dst}.out_proj.bias"), get(&format!("{src}/linear_2/bias"))?);
        Ok(())
    };
    for i in 0..config.encoder_layers {
        let (s, dst) = (format!("encoder/layer_{i}"), format!("model.encoder.layers.{i}"));
        self_attn(&mut t, &format!("{dst}.self_attn"), &format!("{s}/self_attention"))?;
        ln(&mut t, &format!("{dst}.self_attn_layer_norm"), &format!("{s}/self_attention/layer_norm"))?;
        linear(&mut t, &format!("{dst}.fc1"), &format!("{s}/ffn/linear_0"))?;
        linear(&mut t, &format!("{dst}.fc2"), &format!("{s}/ffn/linear_1"))?;
        ln(&mut t, &format!("{dst}.final_layer_norm"), &format!("{s}/ffn/layer_norm"))?;
    }
    for i in 0..config.decoder_layers {
        let (s, dst) = (format!("decoder/layer_{i}"), format!("model.decoder.layers.{i}"));
        self_attn(&mut t, &format!("{dst}.self_attn"), &format!("{s}/self_attention"))?;
        ln(&mut t, &format!("{dst}.self_attn_layer_norm"), &format!("{s}/self_attention/layer_norm"))?;
        cross_attn(&mut t, &format!("{dst}.encoder_attn"), &format!("{s}/attention"))?;
        ln(&mut t, &format!("{dst}.encoder_attn_layer_norm"), &format!("{s}/attention/layer_norm"))?;
        linear(&mut t, &format!("{dst}.fc1"), &format!("{s}/ffn/linear_0"))?;
        linear(&mut t, &format!("{dst}.fc2"), &format!("{s}/ffn/linear_1"))?;
        ln(&mut t, &format!("{dst}.final_layer_norm"), &format!("{s}/ffn/layer_norm"))?;
    }
    Ok((config, t))
}
