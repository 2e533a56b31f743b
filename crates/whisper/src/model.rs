//! The Whisper network (encoder-decoder Transformer), written for serving:
//! - the decoder keeps a self-attention KV cache, so each step feeds one token
//!   (candle-transformers' Whisper recomputes the whole prefix every step);
//! - self-attention q/k/v are one fused matmul (as CTranslate2 stores them);
//! - cross-attention keys/values are computed once per 30 s window;
//! - GELU is the exact erf form PyTorch's Whisper uses;
//! - on the CPU, matmuls, attention, convolutions and GELU go through `voice-kernels` (BLAS
//!   sgemm, attention read straight from the fused projections), elsewhere through candle.
//!
//! Weights load from Hugging Face names (`model.encoder.layers.0.self_attn.q_proj.weight`, ...)
//! through a candle `VarBuilder`; the CTranslate2 reader renames into the same names.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
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
        self.num_mel_bins * d * 3
            + d * d * 3
            + self.max_source_positions * d
            + self.encoder_layers * enc_layer
            + self.decoder_layers * dec_layer
            + self.vocab_size * d
            + self.max_target_positions * d
    }
}

/// A dense layer computed through [`voice_kernels::linear`] (BLAS on the CPU).
#[derive(Debug, Clone)]
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
    /// An f16 copy of `w` for single-token steps on the CPU, which are bound by memory traffic.
    w16: Option<Tensor>,
}

impl Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
        match &self.w16 {
            Some(w16) if rows <= 4 => voice_kernels::linear(x, w16, self.b.as_ref()),
            _ => voice_kernels::linear(x, &self.w, self.b.as_ref()),
        }
    }

    /// Keep an f16 copy of the weights for decoding steps (CPU only; on a GPU the model is f16).
    fn with_f16_steps(mut self) -> Result<Self> {
        if self.w.device().is_cpu() && self.w.dtype() == DType::F32 {
            self.w16 = Some(self.w.to_dtype(DType::F16)?);
        }
        Ok(self)
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Lin> {
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Lin { w, b, w16: None })
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(d, "weight")?, vb.get(d, "bias")?, 1e-5))
}

/// Self-attention with q, k and v fused into one (3d x d) projection (Whisper's k has no bias).
#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Lin,
    out: Lin,
    n_head: usize,
    d: usize,
}

impl SelfAttention {
    fn load(d: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        let q = linear(d, d, true, vb.pp("q_proj"))?;
        let k = linear(d, d, false, vb.pp("k_proj"))?;
        let v = linear(d, d, true, vb.pp("v_proj"))?;
        let w = Tensor::cat(&[&q.w, &k.w, &v.w], 0)?;
        let qb = q.b.expect("q has a bias");
        let b = Tensor::cat(&[&qb, &qb.zeros_like()?, &v.b.expect("v has a bias")], 0)?;
        Ok(Self { qkv: Lin { w, b: Some(b), w16: None }, out: linear(d, d, true, vb.pp("out_proj"))?, n_head, d })
    }

    /// (q, k, v) as column slices of one projection, each (b, t, d).
    fn qkv(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let qkv = self.qkv.forward(x)?;
        Ok((qkv.narrow(D::Minus1, 0, self.d)?, qkv.narrow(D::Minus1, self.d, self.d)?, qkv.narrow(D::Minus1, 2 * self.d, self.d)?))
    }
}

/// Cross-attention; keys and values of the audio are one fused (2d x d) projection.
#[derive(Debug, Clone)]
struct CrossAttention {
    q: Lin,
    kv: Lin,
    out: Lin,
    n_head: usize,
    d: usize,
}

impl CrossAttention {
    fn load(d: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        let k = linear(d, d, false, vb.pp("k_proj"))?;
        let v = linear(d, d, true, vb.pp("v_proj"))?;
        let w = Tensor::cat(&[&k.w, &v.w], 0)?;
        let vbias = v.b.expect("v has a bias");
        let b = Tensor::cat(&[&vbias.zeros_like()?, &vbias], 0)?;
        Ok(Self {
            q: linear(d, d, true, vb.pp("q_proj"))?,
            kv: Lin { w, b: Some(b), w16: None },
            out: linear(d, d, true, vb.pp("out_proj"))?,
            n_head,
            d,
        })
    }

    /// Keys and values of the encoder output (column slices of one tensor), once per window.
    fn kv(&self, xa: &Tensor) -> Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(xa)?;
        Ok((kv.narrow(D::Minus1, 0, self.d)?, kv.narrow(D::Minus1, self.d, self.d)?))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Lin,
    fc2: Lin,
}

impl Mlp {
    fn load(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { fc1: linear(d, 4 * d, true, vb.pp("fc1"))?, fc2: linear(4 * d, d, true, vb.pp("fc2"))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // fc1's output is a fresh tensor only this function holds: GELU in place.
        self.fc2.forward(&voice_kernels::gelu_erf_owned(self.fc1.forward(x)?)?)
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
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
}

#[derive(Debug, Clone)]
pub struct Encoder {
    conv1: Conv,
    conv2: Conv,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    ln_post: LayerNorm,
}

impl Encoder {
    fn load(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let conv = |stride, in_c, name: &str| -> Result<Conv> {
            Ok(Conv { w: vb.get((d, in_c, 3), &format!("{name}.weight"))?, b: vb.get(d, &format!("{name}.bias"))?, stride })
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

    /// mel: (b, n_mels, 3000) -> (b, 1500, d). `cancel` is polled before each stage and layer:
    /// the encoder is most of a short utterance's time, and a transcript nobody waits for any
    /// more (a partial overtaken by the final) gives its CPU back within one layer.
    pub fn forward(&self, mel: &Tensor, cancel: crate::decode::Cancel) -> anyhow::Result<Tensor> {
        let check = || if cancel() { Err(anyhow::Error::from(crate::decode::Cancelled)) } else { Ok(()) };
        let c = |conv: &Conv, x: &Tensor| voice_kernels::conv1d(x, &conv.w, Some(&conv.b), conv.stride, 1);
        check()?;
        let x = voice_kernels::gelu_erf_owned(c(&self.conv1, mel)?)?;
        check()?;
        let x = voice_kernels::gelu_erf_owned(c(&self.conv2, &x)?)?;
        let x = x.transpose(1, 2)?;
        let t = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        for l in &self.layers {
            check()?;
            let (q, k, v) = l.attn.qkv(&l.attn_ln.forward(&x)?)?;
            let a = voice_kernels::attention(&q, &k, &v, l.attn.n_head, None)?;
            x = (x + l.attn.out.forward(&a)?)?;
            x = (&x + l.mlp.forward(&l.mlp_ln.forward(&x)?)?)?;
        }
        Ok(self.ln_post.forward(&x)?)
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
    /// The output projection (tied to the embedding). On the CPU kept in f16: decoding one token
    /// reads this whole matrix, so half the bytes is nearly half the time; the registry models
    /// are stored in f16, so nothing is lost there.
    out_proj: Tensor,
    positions: Tensor,
    layers: Vec<DecoderLayer>,
    ln: LayerNorm,
    pub n_ctx: usize,
}

/// Per-window decoder state: cross-attention K/V of the audio and the growing self-attention
/// cache, both (b, t, d).
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
                let mut attn = SelfAttention::load(d, cfg.decoder_attention_heads, vb.pp("self_attn"))?;
                attn.qkv = attn.qkv.with_f16_steps()?;
                attn.out = attn.out.with_f16_steps()?;
                let mut cross = CrossAttention::load(d, cfg.decoder_attention_heads, vb.pp("encoder_attn"))?;
                cross.q = cross.q.with_f16_steps()?;
                cross.out = cross.out.with_f16_steps()?;
                let mut mlp = Mlp::load(d, vb.clone())?;
                mlp.fc1 = mlp.fc1.with_f16_steps()?;
                mlp.fc2 = mlp.fc2.with_f16_steps()?;
                Ok(DecoderLayer {
                    attn,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    cross,
                    cross_ln: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
                    mlp,
                    mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out_proj = if embed_w.device().is_cpu() { embed_w.to_dtype(DType::F16)? } else { embed_w.clone() };
        Ok(Self {
            embed: Embedding::new(embed_w, d),
            out_proj,
            positions: vb.get((cfg.max_target_positions, d), "embed_positions.weight")?,
            layers,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
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
        for (i, l) in self.layers.iter().enumerate() {
            let (q, k, v) = l.attn.qkv(&l.attn_ln.forward(&x)?)?;
            let (k, v) = match state.cache[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                None => (k.contiguous()?, v.contiguous()?),
            };
            let a = voice_kernels::attention(&q, &k, &v, l.attn.n_head, Some(past))?;
            state.cache[i] = Some((k, v));
            x = (x + l.attn.out.forward(&a)?)?;
            let q = l.cross.q.forward(&l.cross_ln.forward(&x)?)?;
            let (ck, cv) = &state.cross[i];
            let a = voice_kernels::attention(&q, ck, cv, l.cross.n_head, None)?;
            x = (&x + l.cross.out.forward(&a)?)?;
            x = (&x + l.mlp.forward(&l.mlp_ln.forward(&x)?)?)?;
        }
        state.len += n;
        self.ln.forward(&x)
    }

    /// Logits (b, vocab) in f32 for hidden states `h` (b, d); the output projection is tied to
    /// the token embedding.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        voice_kernels::linear(h, &self.out_proj, None)?.to_dtype(DType::F32)
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
