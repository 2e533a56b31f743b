//! The BERT encoder's CPU forward pass without padding (as text-embeddings-inference does on
//! CPU): the tokens of every sequence in a batch are packed into one (tokens, hidden) matrix, so
//! the dense layers run as a few large BLAS products with no work on padding, and attention runs
//! per sequence over exactly its own tokens (no mask needed). Candle's `BertModel` does the same
//! maths on padded (batch, longest, hidden) tensors with a handful of extra ops per layer; on CUDA
//! that is the right shape and it stays the path there.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?.to_vec1::<f32>()?, bias: vb.get(dim, "bias")?.to_vec1::<f32>()?, eps: eps as f32 })
    }

    /// LayerNorm of every row of `x` (in place).
    fn apply(&self, x: &mut [f32]) {
        let d = self.weight.len();
        for row in x.chunks_mut(d) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

struct Layer {
    /// q, k and v stacked: (3 * hidden, hidden), one product for all three.
    qkv_w: Tensor,
    qkv_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    norm1: Norm,
    up_w: Tensor,
    up_b: Tensor,
    down_w: Tensor,
    down_b: Tensor,
    norm2: Norm,
}

pub struct CpuBert {
    word: Tensor,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    gelu_tanh: bool,
}

impl CpuBert {
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let word = e.get((cfg.vocab_size, h), "word_embeddings.weight").context("embeddings.word_embeddings")?;
        let position = e.get((cfg.max_position_embeddings, h), "position_embeddings.weight")?.flatten_all()?.to_vec1::<f32>()?;
        let token_type0 = e.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?.get(0)?.to_vec1::<f32>()?;
        let norm = Norm::load(&e.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let s = a.pp("self");
            let lin_w = |vb: &VarBuilder, out: usize, inp: usize| vb.get((out, inp), "weight");
            let lin_b = |vb: &VarBuilder, out: usize| vb.get(out, "bias");
            let qkv_w = Tensor::cat(&[lin_w(&s.pp("query"), h, h)?, lin_w(&s.pp("key"), h, h)?, lin_w(&s.pp("value"), h, h)?], 0)?;
            let qkv_b = Tensor::cat(&[lin_b(&s.pp("query"), h)?, lin_b(&s.pp("key"), h)?, lin_b(&s.pp("value"), h)?], 0)?;
            let inter = cfg.intermediate_size;
            layers.push(Layer {
                qkv_w,
                qkv_b,
                out_w: lin_w(&a.pp("output.dense"), h, h)?,
                out_b: lin_b(&a.pp("output.dense"), h)?,
                norm1: Norm::load(&a.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
                up_w: lin_w(&l.pp("intermediate.dense"), inter, h)?,
                up_b: lin_b(&l.pp("intermediate.dense"), inter)?,
                down_w: lin_w(&l.pp("output.dense"), h, inter)?,
                down_b: lin_b(&l.pp("output.dense"), h)?,
                norm2: Norm::load(&l.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        let gelu_tanh = match cfg.hidden_act {
            HiddenAct::Gelu => false,
            HiddenAct::GeluApproximate => true,
            HiddenAct::Relu => anyhow::bail!("ReLU BERT variants are not supported on the CPU path"),
        };
        Ok(Self { word, position, token_type0, norm, layers, hidden: h, heads: cfg.num_attention_heads, gelu_tanh })
    }

    /// Hidden states of every token of every sequence, packed: (sum of lengths, hidden).
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<(Vec<f32>, Vec<usize>)> {
        let h = self.hidden;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let total: usize = lens.iter().sum();
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, total, &Device::Cpu)?;
        let mut x = self.word.index_select(&ids, 0)?.flatten_all()?.to_vec1::<f32>()?;
        let mut row = 0;
        for &len in &lens {
            for p in 0..len {
                let dst = &mut x[(row + p) * h..(row + p + 1) * h];
                let pos = &self.position[p * h..(p + 1) * h];
                for ((v, a), b) in dst.iter_mut().zip(pos).zip(&self.token_type0) {
                    *v += a + b;
                }
            }
            row += len;
        }
        self.norm.apply(&mut x);

        for layer in &self.layers {
            let xt = Tensor::from_slice(&x, (total, h), &Device::Cpu)?;
            let qkv = voice_kernels::linear(&xt, &layer.qkv_w, Some(&layer.qkv_b))?; // (total, 3h)
            let mut parts = Vec::with_capacity(lens.len());
            let mut start = 0;
            for &len in &lens {
                let rows = qkv.narrow(0, start, len)?.unsqueeze(0)?; // (1, len, 3h), row stride 3h
                let q = rows.narrow(2, 0, h)?;
                let k = rows.narrow(2, h, h)?;
                let v = rows.narrow(2, 2 * h, h)?;
                parts.push(voice_kernels::attention(&q, &k, &v, self.heads, None)?.squeeze(0)?);
                start += len;
            }
            let ctx = Tensor::cat(&parts, 0)?;
            let attn = voice_kernels::linear(&ctx, &layer.out_w, Some(&layer.out_b))?.to_vec2::<f32>()?;
            for (dst, src) in x.chunks_mut(h).zip(&attn) {
                dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
            }
            layer.norm1.apply(&mut x);

            let xt = Tensor::from_slice(&x, (total, h), &Device::Cpu)?;
            let up = voice_kernels::linear(&xt, &layer.up_w, Some(&layer.up_b))?;
            let up = if self.gelu_tanh { up.gelu()? } else { voice_kernels::gelu_erf_owned(up)? };
            let down = voice_kernels::linear(&up, &layer.down_w, Some(&layer.down_b))?.flatten_all()?.to_vec1::<f32>()?;
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            layer.norm2.apply(&mut x);
        }
        Ok((x, lens))
    }
}
