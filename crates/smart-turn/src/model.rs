//! The forward pass on candle tensors (any device), with the export's activation quantization
//! applied where the graph applies it ([`crate::graph`]).
//!
//! Matrix products, convolutions, GELU and softmax go through voice-kernels (BLAS and vectorised
//! loops on the CPU, candle elsewhere); the fake quantization is one pass over the values on the
//! CPU and candle ops on other devices.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, D};

use crate::graph::{self, Fq};

fn tensor(t: &voice_onnx::HostTensor, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(&t.data, t.shape.as_slice(), device)
}

/// `(clamp(round(x / scale) + zero, 0, 255) - zero) * scale`, rounding halves to even as ONNX's
/// `QuantizeLinear` does.
fn fake_quant(x: &Tensor, q: Fq) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&FakeQuant(q));
    }
    let levels = ((x / q.scale as f64)?.round()? + q.zero as f64)?.clamp(0f32, 255f32)?;
    (levels - q.zero as f64)? * q.scale as f64
}

struct FakeQuant(Fq);

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "fake-quant-u8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else { candle_core::bail!("fake-quant-u8 needs f32") };
        let Fq { scale, zero } = self.0;
        let q = |x: f32| ((x / scale).round_ties_even() + zero).clamp(0.0, 255.0);
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("fake-quant-u8 needs a contiguous tensor") };
        let out: Vec<f32> = v[a..b].iter().map(|&x| (q(x) - zero) * scale).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    out: Fq,
    bias_before_quant: bool,
}

impl Linear {
    fn new(l: &graph::LinearW, dev: &Device) -> Result<Self> {
        Ok(Self { w: tensor(&l.w, dev)?, b: l.b.as_ref().map(|b| tensor(b, dev)).transpose()?, out: l.out, bias_before_quant: l.bias_before_quant })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.bias_before_quant {
            return fake_quant(&voice_kernels::linear(x, &self.w, self.b.as_ref())?, self.out);
        }
        let y = fake_quant(&voice_kernels::linear(x, &self.w, None)?, self.out)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    padding: usize,
    out: Fq,
}

impl Conv {
    fn new(c: &graph::ConvW, dev: &Device) -> Result<Self> {
        Ok(Self { w: tensor(&c.w, dev)?, b: tensor(&c.b, dev)?, stride: c.stride, padding: c.padding, out: c.out })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        fake_quant(&voice_kernels::conv1d(x, &self.w, Some(&self.b), self.stride, self.padding)?, self.out)
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl Norm {
    fn new(n: &graph::NormW, dev: &Device) -> Result<Self> {
        Ok(Self { w: tensor(&n.w, dev)?, b: tensor(&n.b, dev)?, eps: n.eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps)
    }
}

struct Layer {
    attn_norm: Norm,
    attn_norm_q: Fq,
    a: graph::AttentionW,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ffn_norm: Norm,
    ffn_norm_q: Fq,
    fc1: Linear,
    gelu_q: Fq,
    fc2: Linear,
}

impl Layer {
    fn new(l: &graph::LayerW, dev: &Device) -> Result<Self> {
        Ok(Self {
            attn_norm: Norm::new(&l.attn_norm, dev)?,
            attn_norm_q: l.attn_norm_q,
            a: l.attn.clone(),
            q: Linear::new(&l.attn.q, dev)?,
            k: Linear::new(&l.attn.k, dev)?,
            v: Linear::new(&l.attn.v, dev)?,
            out: Linear::new(&l.attn.out, dev)?,
            ffn_norm: Norm::new(&l.ffn_norm, dev)?,
            ffn_norm_q: l.ffn_norm_q,
            fc1: Linear::new(&l.fc1, dev)?,
            gelu_q: l.gelu_q,
            fc2: Linear::new(&l.fc2, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let heads = self.a.heads;
        let h = fake_quant(&self.attn_norm.forward(x)?, self.attn_norm_q)?;
        // (b, t, d) -> (b, heads, t, head_dim)
        let split = |y: Tensor| y.reshape((b, t, heads, d / heads))?.transpose(1, 2)?.contiguous();
        let q = fake_quant(&(split(self.q.forward(&h)?)? * self.a.q_mul as f64)?, self.a.q_scaled)?;
        let k = fake_quant(&(split(self.k.forward(&h)?)? * self.a.k_mul as f64)?, self.a.k_scaled)?;
        let v = fake_quant(&split(self.v.forward(&h)?)?, self.a.v_heads)?;
        let scores = fake_quant(&q.matmul(&k.t()?)?, self.a.scores)?;
        let probs = fake_quant(&voice_kernels::softmax_last_dim(&scores)?, self.a.probs)?;
        let context = fake_quant(&probs.matmul(&v)?, self.a.context)?;
        let merged = fake_quant(&context.transpose(1, 2)?.reshape((b, t, d))?, self.a.merged)?;
        let x = (x + self.out.forward(&merged)?)?;

        let h = fake_quant(&self.ffn_norm.forward(&x)?, self.ffn_norm_q)?;
        let f = fake_quant(&voice_kernels::gelu_erf(&self.fc1.forward(&h)?)?, self.gelu_q)?;
        x + self.fc2.forward(&f)?
    }
}

/// The network on one device.
pub(crate) struct Model {
    input_q: Fq,
    conv1: Conv,
    gelu1_q: Fq,
    conv2: Conv,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: Norm,
    final_q: Fq,
    pool_hidden: Linear,
    pool_tanh_q: Fq,
    pool_score: Linear,
    pooled_q: Fq,
    cls_in: Linear,
    cls_norm: Norm,
    cls_gelu_q: Fq,
    cls_mid: Linear,
    cls_mid_gelu_q: Fq,
    cls_out: Linear,
}

impl Model {
    pub fn new(w: &graph::Weights, dev: &Device) -> Result<Self> {
        Ok(Self {
            input_q: w.input_q,
            conv1: Conv::new(&w.conv1, dev)?,
            gelu1_q: w.gelu1_q,
            conv2: Conv::new(&w.conv2, dev)?,
            positions: tensor(&w.positions, dev)?,
            layers: w.layers.iter().map(|l| Layer::new(l, dev)).collect::<Result<_>>()?,
            final_norm: Norm::new(&w.final_norm, dev)?,
            final_q: w.final_q,
            pool_hidden: Linear::new(&w.pool_hidden, dev)?,
            pool_tanh_q: w.pool_tanh_q,
            pool_score: Linear::new(&w.pool_score, dev)?,
            pooled_q: w.pooled_q,
            cls_in: Linear::new(&w.cls_in, dev)?,
            cls_norm: Norm::new(&w.cls_norm, dev)?,
            cls_gelu_q: w.cls_gelu_q,
            cls_mid: Linear::new(&w.cls_mid, dev)?,
            cls_mid_gelu_q: w.cls_mid_gelu_q,
            cls_out: Linear::new(&w.cls_out, dev)?,
        })
    }

    /// Features (batch, mels, frames) -> end-of-turn probability (batch).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let x = fake_quant(features, self.input_q)?;
        let x = fake_quant(&voice_kernels::gelu_erf(&self.conv1.forward(&x)?)?, self.gelu1_q)?;
        let x = voice_kernels::gelu_erf(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?.broadcast_add(&self.positions)?;
        let mut x = x.contiguous()?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        let h = fake_quant(&self.final_norm.forward(&x)?, self.final_q)?;
        // Attention pooling: one weight per frame, softmax over frames.
        let a = fake_quant(&self.pool_hidden.forward(&h)?.tanh()?, self.pool_tanh_q)?;
        let weights = candle_nn::ops::softmax(&self.pool_score.forward(&a)?, 1)?;
        let pooled = fake_quant(&h.broadcast_mul(&weights)?.sum(1)?, self.pooled_q)?;
        let c = self.cls_norm.forward(&self.cls_in.forward(&pooled)?)?;
        let c = fake_quant(&voice_kernels::gelu_erf(&c)?, self.cls_gelu_q)?;
        let c = fake_quant(&voice_kernels::gelu_erf(&self.cls_mid.forward(&c)?)?, self.cls_mid_gelu_q)?;
        candle_nn::ops::sigmoid(&self.cls_out.forward(&c)?)?.squeeze(D::Minus1)
    }
}
