//! The Whisper network (encoder-decoder Transformer), written for serving:
//! - the decoder keeps a self-attention KV cache, so each step feeds one token
//!   (candle-transformers' Whisper recomputes the whole prefix every step);
//! - self-attention q/k/v are one fused matmul (as CTranslate2 stores them);
//! - cross-attention keys/values are computed once per 30 s window;
//! - GELU is the exact erf form PyTorch's Whisper uses.
//!
//! Weights load from Hugging Face names (`model.encoder.layers.0.self_attn.q_proj.weight`, ...)
//! through a candle `VarBuilder`; the CTranslate2 reader renames into the same names.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Hugging Face `config.json` fields we use (the CTranslate2 reader fills the same struct).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct WhisperConfig {
    pub num_mel_bins: usize,
    pub max_source_positions: usize,
    pub d_model: usize,
    pub encoder_attention_heads: usize,
    pub encoder_layers: usize,
    pub vocab_size: usize,
    pub max_target_positions: usize,
    pub decoder_attention_heads: usize,
    pub decoder_layers: usize,
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
}

impl WhisperConfig {
    /// Parameters, for memory estimates.
    pub fn parameter_count(&self) -> usize {
        let d = self.d_model;
        let enc_layer = 4 * d * d + 8 * d * d + 13 * d;
        let dec_layer = 8 * d * d + 8 * d * d + 20 * d;
        self.num_mel_bins * d * 3 + d * d * 3 + self.max_source_positions * d
            + self.encoder_layers * enc_layer
            + self.decoder_layers * dec_layer
            + self.vocab_size * d
            + self.max_target_positions * d
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear::new(w, b))
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(d, "weight")?, vb.get(d, "bias")?, 1e-5))
}

/// (b, t, h*dh) -> (b, h, t, dh), contiguous.
fn split_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, n_head, d / n_head))?.transpose(1, 2)?.contiguous()
}

/// (b, h, t, dh) -> (b, t, h*dh).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * dh))
}

fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dh = q.dim(D::Minus1)?;
    let q = (q * (dh as f64).powf(-0.5))?;
    let mut w = q.matmul(&k.t()?)?;
    if let Some(m) = mask {
        w = w.broadcast_add(m)?;
    }
    let w = candle_nn::ops::softmax_last_dim(&w)?;
    w.matmul(v)
}

#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Linear,
    out: Linear,
    n_head: usize,
    d: usize,
}

impl SelfAttention {
    fn load(d: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        // Fuse q, k, v into one (3d x d) matmul; k has no bias in Whisper.
        let q = linear(d, d, true, vb.pp("q_proj"))?;
        let k = linear(d, d, false, vb.pp("k_proj"))?;
        let v = linear(d, d, true, vb.pp("v_proj"))?;
        let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let qb = q.bias().expect("q has a bias");
        let b = Tensor::cat(&[qb, &qb.zeros_like()?, v.bias().expect("v has a bias")], 0)?;
        Ok(Self { qkv: Linear::new(w, Some(b)), out: linear(d, d, true, vb.pp("out_proj"))?, n_head, d })
    }

    fn qkv(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let qkv = self.qkv.forward(x)?;
        let q = split_heads(&qkv.narrow(D::Minus1, 0, self.d)?, self.n_head)?;
        let k = split_heads(&qkv.narrow(D::Minus1, self.d, self.d)?, self.n_head)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * self.d, self.d)?, self.n_head)?;
        Ok((q, k, v))
    }
}

#[derive(Debug, Clone)]
struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    n_head: usize,
    d: usize,
}

impl CrossAttention {
    fn load(d: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        let k = linear(d, d, false, vb.pp("k_proj"))?;
        let v = linear(d, d, true, vb.pp("v_proj"))?;
        let w = Tensor::cat(&[k.weight(), v.weight()], 0)?;
        let vb_ = v.bias().expect("v has a bias");
        let b = Tensor::cat(&[&vb_.zeros_like()?, vb_], 0)?;
        Ok(Self {
            q: linear(d, d, true, vb.pp("q_proj"))?,
            kv: Linear::new(w, Some(b)),
            out: linear(d, d, true, vb.pp("out_proj"))?,
            n_head,
            d,
        })
    }

    /// Keys and values of the encoder output, once per window.
    fn kv(&self, xa: &Tensor) -> Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(xa)?;
        let k = split_heads(&kv.narrow(D::Minus1, 0, self.d)?, self.n_head)?;
        let v = split_heads(&kv.narrow(D::Minus1, self.d, self.d)?, self.n_head)?;
        Ok((k, v))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { fc1: linear(d, 4 * d, true, vb.pp("fc1"))?, fc2: linear(4 * d, d, true, vb.pp("fc2"))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    attn: SelfAttention,
    attn_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    ln_post: LayerNorm,
}

impl Encoder {
    fn load(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let conv = |stride, in_c, name: &str| -> Result<Conv1d> {
            let w = vb.get((d, in_c, 3), &format!("{name}.weight"))?;
            let b = vb.get(d, &format!("{name}.bias"))?;
            Ok(Conv1d::new(w, Some(b), Conv1dConfig { padding: 1, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None }))
        };
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(EncoderLayer {
                    attn: SelfAttention::load(d, cfg.encoder_attention_heads, vb.pp("self_attn"))?,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    mlp: Mlp::load(d, vb.clone())?,
                    mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: conv(1, cfg.num_mel_bins, "conv1")?,
            conv2: conv(2, d, "conv2")?,
            positions: vb.get((cfg.max_source_positions, d), "embed_positions.weight")?,
            layers,
            ln_post: layer_norm(d, vb.pp("layer_norm"))?,
        })
    }

    /// mel: (b, n_mels, 3000) -> (b, 1500, d).
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(mel)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?;
        let x = x.transpose(1, 2)?;
        let t = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        for l in &self.layers {
            let (q, k, v) = l.attn.qkv(&l.attn_ln.forward(&x)?)?;
            let a = merge_heads(&attention(&q, &k, &v, None)?)?;
            x = (x + l.attn.out.forward(&a)?)?;
            x = (&x + l.mlp.forward(&l.mlp_ln.forward(&x)?)?)?;
        }
        self.ln_post.forward(&x)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    attn: SelfAttention,
    attn_ln: LayerNorm,
    cross: CrossAttention,
    cross_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Embedding,
    positions: Tensor,
    layers: Vec<DecoderLayer>,
    ln: LayerNorm,
    embed_t: Tensor,
    pub n_ctx: usize,
}

/// Per-window decoder state: cross-attention K/V of the audio and the growing self-attention cache.
pub struct DecoderState {
    cross: Vec<(Tensor, Tensor)>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    pub len: usize,
}

impl Decoder {
    fn load(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let embed_w = vb.get((cfg.vocab_size, d), "embed_tokens.weight")?;
        let layers = (0..cfg.decoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(DecoderLayer {
                    attn: SelfAttention::load(d, cfg.decoder_attention_heads, vb.pp("self_attn"))?,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    cross: CrossAttention::load(d, cfg.decoder_attention_heads, vb.pp("encoder_attn"))?,
                    cross_ln: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
                    mlp: Mlp::load(d, vb.clone())?,
                    mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The output projection is tied to the embedding; keep a contiguous transpose for speed.
        let embed_t = embed_w.t()?.contiguous()?;
        Ok(Self {
            embed: Embedding::new(embed_w, d),
            positions: vb.get((cfg.max_target_positions, d), "embed_positions.weight")?,
            layers,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            embed_t,
            n_ctx: cfg.max_target_positions,
        })
    }

    /// Start decoding against encoder output `xa` (b, 1500, d).
    pub fn start(&self, xa: &Tensor) -> Result<DecoderState> {
        let cross = self.layers.iter().map(|l| l.cross.kv(xa)).collect::<Result<Vec<_>>>()?;
        Ok(DecoderState { cross, cache: vec![None; self.layers.len()], len: 0 })
    }

    /// Feed `tokens` (b, n) after what the state has seen; returns hidden states (b, n, d).
    pub fn forward(&self, tokens: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let (_, n) = tokens.dims2()?;
        let past = state.len;
        if past + n > self.n_ctx {
            candle_core::bail!("decoder context of {} tokens exceeded", self.n_ctx);
        }
        let mut x = self.embed.forward(tokens)?.broadcast_add(&self.positions.narrow(0, past, n)?)?;
        let mask = if n > 1 {
            let m: Vec<f32> = (0..n)
                .flat_map(|i| (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(m, (n, past + n), tokens.device())?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for (i, l) in self.layers.iter().enumerate() {
            let (q, k, v) = l.attn.qkv(&l.attn_ln.forward(&x)?)?;
            let (k, v) = match state.cache[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let a = merge_heads(&attention(&q, &k, &v, mask.as_ref())?)?;
            state.cache[i] = Some((k, v));
            x = (x + l.attn.out.forward(&a)?)?;
            let q = split_heads(&l.cross.q.forward(&l.cross_ln.forward(&x)?)?, l.cross.n_head)?;
            let (ck, cv) = &state.cross[i];
            let a = merge_heads(&attention(&q, ck, cv, None)?)?;
            x = (&x + l.cross.out.forward(&a)?)?;
            x = (&x + l.mlp.forward(&l.mlp_ln.forward(&x)?)?)?;
        }
        state.len += n;
        self.ln.forward(&x)
    }

    /// Logits (b, vocab) in f32 for hidden states `h` (b, d).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        h.matmul(&self.embed_t)?.to_dtype(DType::F32)
    }
}

#[derive(Debug, Clone)]
pub struct Whisper {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub config: WhisperConfig,
    pub dtype: DType,
    pub device: Device,
}

impl Whisper {
    pub fn load(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::load(cfg, vb.pp("model.encoder"))?,
            decoder: Decoder::load(cfg, vb.pp("model.decoder"))?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }
}
