//! A BERT-family sentence encoder: tokenizer, candle BERT, pooling, L2 normalisation.
//!
//! Files a model directory holds (the sentence-transformers layout): `config.json`,
//! `tokenizer.json`, `model.safetensors`, and optionally `1_Pooling/config.json` (pooling mode;
//! mean when absent) and `sentence_bert_config.json` (`max_seq_length`; else the position limit).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::cpu_bert::CpuBert;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average over the real (unpadded) tokens: all-MiniLM, e5, gte.
    Mean,
    /// The first token's vector: bge.
    Cls,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// A tokenized input, ready for [`Embedder::embed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids including the special tokens ([CLS] ... [SEP]).
    pub ids: Vec<u32>,
    /// Tokens the text had before truncation (special tokens included).
    pub original_len: usize,
}

impl Encoded {
    pub fn truncated(&self) -> bool {
        self.original_len > self.ids.len()
    }
}

enum Backend {
    /// Packed, padding-free forward pass on the CPU (voice-kernels BLAS products).
    Cpu(CpuBert),
    /// candle's BERT on padded batches (CUDA, or on request).
    Candle(BertModel),
}

/// One loaded encoder. Cheap to share (`Arc`); `embed` takes `&self`.
pub struct Embedder {
    backend: Backend,
    tokenizer: Tokenizer,
    pub pooling: Pooling,
    /// Longest input in tokens (special tokens included); longer inputs are truncated.
    pub max_seq_len: usize,
    pub dimensions: usize,
    pad_id: u32,
    device: Device,
}

impl Embedder {
    /// Load a model directory on `device` (the packed CPU forward pass on the CPU).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, false)
    }

    /// Load with candle's `BertModel` on any device (the reference the CPU path is tested against).
    pub fn load_candle(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, true)
    }

    fn load_with(dir: &Path, device: &Device, force_candle: bool) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
        let config: Config = serde_json::from_str(&config_text).with_context(|| format!("{} is not a BERT config", config_path.display()))?;
        let pooling = read_pooling(dir)?;
        let max_seq_len = read_max_seq_len(dir, config.max_position_embeddings)?;

        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| anyhow::anyhow!("loading {}: {e}", dir.join("tokenizer.json").display()))?;
        // tokenizer.json files often carry the exporter's fixed padding and truncation (128 for
        // all-MiniLM); we pad per batch and truncate to max_seq_len ourselves.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| anyhow::anyhow!("{e}"))?;

        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            bail!("{} is missing (only safetensors weights are supported)", weights.display());
        }
        // SAFETY: the file is memory-mapped read-only and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .with_context(|| format!("reading {}", weights.display()))?;
        let backend = if matches!(device, Device::Cpu) && !force_candle {
            Backend::Cpu(CpuBert::load(vb, &config).with_context(|| format!("loading the BERT weights from {}", weights.display()))?)
        } else {
            Backend::Candle(BertModel::load(vb, &config).with_context(|| format!("loading the BERT weights from {}", weights.display()))?)
        };
        Ok(Self {
            backend,
            tokenizer,
            pooling,
            max_seq_len,
            dimensions: config.hidden_size,
            pad_id: config.pad_token_id as u32,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Tokenize texts (special tokens added), truncating each to `max_seq_len`.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let ids = e.get_ids();
                let original_len = ids.len();
                let ids = if original_len > self.max_seq_len && self.max_seq_len >= 2 {
                    // Keep the head and the closing special token, as the tokenizer's own
                    // right-truncation does for a single sequence ([CLS] a b c ... [SEP]).
                    let mut kept = ids[..self.max_seq_len - 1].to_vec();
                    kept.push(ids[original_len - 1]);
                    kept
                } else {
                    ids.to_vec()
                };
                Encoded { ids, original_len }
            })
            .collect())
    }

    /// Tokens in `text` without special tokens (what chunking and context budgets count).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, false).map(|e| e.len()).unwrap_or_else(|_| text.split_whitespace().count())
    }

    /// Embed a batch: run the encoder, pool, L2-normalise.
    pub fn embed(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let model = match &self.backend {
            Backend::Cpu(bert) => return self.embed_packed(bert, batch),
            Backend::Candle(m) => m,
        };
        let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0).max(1);
        let n = batch.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in batch {
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(self.pad_id, len - e.ids.len()));
            mask.extend(std::iter::repeat_n(1u32, e.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, len - e.ids.len()));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
                let summed = hidden.broadcast_mul(&m)?.sum(1)?; // (n, dim)
                let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
                summed.broadcast_div(&counts)?
            }
        };
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        let normed = pooled.broadcast_div(&norms)?;
        Ok(normed.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }
}

impl Embedder {
    fn embed_packed(&self, bert: &CpuBert, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        let (hidden, lens) = bert.forward(&seqs)?;
        let d = self.dimensions;
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        for len in lens {
            let rows = &hidden[start * d..(start + len) * d];
            let mut v = match self.pooling {
                Pooling::Cls => rows[..d].to_vec(),
                Pooling::Mean => {
                    let mut acc = vec![0f32; d];
                    for r in rows.chunks(d) {
                        acc.iter_mut().zip(r).for_each(|(a, x)| *a += x);
                    }
                    acc.iter_mut().for_each(|a| *a /= len.max(1) as f32);
                    acc
                }
            };
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
            start += len;
        }
        Ok(out)
    }
}

fn read_pooling(dir: &Path) -> Result<Pooling> {
    let path = dir.join("1_Pooling").join("config.json");
    if !path.is_file() {
        return Ok(Pooling::Mean);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: PoolingConfig = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match (cfg.pooling_mode_cls_token, cfg.pooling_mode_mean_tokens, cfg.pooling_mode_max_tokens, cfg.pooling_mode_mean_sqrt_len_tokens) {
        (true, false, false, false) => Ok(Pooling::Cls),
        (false, true, false, false) => Ok(Pooling::Mean),
        _ => bail!("{}: only a single mean or CLS pooling mode is supported", path.display()),
    }
}

fn read_max_seq_len(dir: &Path, max_positions: usize) -> Result<usize> {
    let path = dir.join("sentence_bert_config.json");
    let from_file = if path.is_file() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str::<SentenceBertConfig>(&text).with_context(|| format!("parsing {}", path.display()))?.max_seq_length
    } else {
        None
    };
    Ok(from_file.unwrap_or(max_positions).min(max_positions).max(2))
}
