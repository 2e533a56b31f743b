//! The forward pass on candle tensors (any device), with the export's activation quantization
//! applied where the graph applies it ([`crate::graph`]).
//!
//! Matrix products, convolutions, GELU and softmax go through voice-kernels (BLAS and vectorised
//! loops on the CPU, candle elsewhere); the fake quantization is one pass over the values on the
//! CPU and candle ops on other devices. On a CPU with AVX-512 VNNI the encoder's projections run
//! as int8 x uint8 products with exact int32 sums (voice-kernels `int8`): their inputs are already
//! on the graph's uint8 grid and the weights are int8 per output channel, so this is the same
//! arithmetic as the f32 product of the dequantized values, up to the f32 rounding of the sums.

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

/// [`fake_quant`] in place on host values.
fn fake_quant_slice(v: &mut [f32], q: Fq) {
    let Fq { scale, zero } = q;
    // Round half to even by adding and removing 1.5 * 2^23 (exact for |v| < 2^22, which the
    // clamp to the uint8 range guarantees first): vectorises, unlike a libm rintf call.
    const MAGIC: f32 = 12_582_912.0;
    for x in v.iter_mut() {
        let l = (*x / scale).clamp(-zero - 1.0, 256.0 - zero);
        *x = ((((l + MAGIC) - MAGIC) + zero).clamp(0.0, 255.0) - zero) * scale;
    }
}

struct FakeQuant(Fq);

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "fake-quant-u8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else { candle_core::bail!("fake-quant-u8 needs f32") };
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("fake-quant-u8 needs a contiguous tensor") };
        let mut out = v[a..b].to_vec();
        fake_quant_slice(&mut out, self.0);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// How a [`Linear`] multiplies: f32 weights (any device), or int8 weights and the grid its input
/// is on (a CPU with VNNI; the f32 copy is then not kept).
enum Product {
    F32(Tensor),
    Int8 { w: voice_kernels::int8::QuantConv1d, input: Fq },
}

struct Linear {
    product: Product,
    b: Option<Tensor>,
    out: Fq,
    bias_before_quant: bool,
}

impl Linear {
    fn new(l: &graph::LinearW, dev: &Device) -> Result<Self> {
        Self::with(l, dev, Product::F32(tensor(&l.w, dev)?))
    }

    fn with(l: &graph::LinearW, dev: &Device, product: Product) -> Result<Self> {
        Ok(Self { product, b: l.b.as_ref().map(|b| tensor(b, dev)).transpose()?, out: l.out, bias_before_quant: l.bias_before_quant })
    }

    /// A layer whose input is quantized to `input` (the activation before it in the graph):
    /// int8 products on a CPU that has them. The export's weights are int8 per output channel
    /// with the largest at +-127 in every channel (checked when the file was added), so
    /// re-quantizing the dequantized weights gives back the file's integers.
    fn quantized(l: &graph::LinearW, dev: &Device, input: Fq) -> Result<Self> {
        let uint8_zero = input.zero >= 0.0 && input.zero <= 255.0 && input.zero.fract() == 0.0;
        if !(dev.is_cpu() && voice_kernels::int8::available() && !l.bias_before_quant && uint8_zero) {
            return Self::new(l, dev);
        }
        let [n, k] = l.w.shape[..] else { candle_core::bail!("linear weight of shape {:?}", l.w.shape) };
        let w = voice_kernels::int8::QuantConv1d::from_f32(&l.w.data, n, k, 1);
        Self::with(l, dev, Product::Int8 { w, input })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias_inside = self.b.as_ref().filter(|_| self.bias_before_quant);
        let y = match &self.product {
            Product::F32(w) => voice_kernels::linear(x, w, bias_inside)?,
            Product::Int8 { w, input } => {
                let mut shape = x.dims().to_vec();
                let m = x.elem_count() / w.c_in.max(1);
                let xv = x.flatten_all()?.to_vec1::<f32>()?;
                // None only without VNNI or with a bad scale, both ruled out in `quantized`.
                let y = voice_kernels::int8::linear_quantized(&xv, m, w, None, input.scale, input.zero as u8)
                    .ok_or_else(|| candle_core::Error::Msg("the int8 product is unavailable".into()))?;
                *shape.last_mut().expect("at least one dimension") = w.c_out;
                Tensor::from_vec(y, shape, &Device::Cpu)?
            }
        };
        let y = fake_quant(&y, self.out)?;
        match (&self.b, self.bias_before_quant) {
            (Some(b), false) => y.broadcast_add(b),
            _ => Ok(y),
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
    a: graph::AttentionQuant,
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
    /// Scores, softmax and context per head with BLAS on host buffers (the CPU path: one sgemm
    /// per product instead of candle's batched matmul and its worker pool). q, k, v are
    /// (batch, heads, frames, head_dim), contiguous. None off the CPU or without a BLAS.
    fn attention_blas(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
        let Some(blas) = voice_kernels::blas::get().filter(|_| q.device().is_cpu() && q.dtype() == DType::F32) else { return Ok(None) };
        let (b, h, t, dh) = q.dims4()?;
        let (qv, kv, vv) = (q.flatten_all()?.to_vec1::<f32>()?, k.flatten_all()?.to_vec1::<f32>()?, v.flatten_all()?.to_vec1::<f32>()?);
        let mut out = vec![0f32; b * h * t * dh];
        let mut scores = vec![0f32; t * t];
        for (i, ctx) in out.chunks_mut(t * dh).enumerate() {
            let (qh, kh, vh) = (&qv[i * t * dh..(i + 1) * t * dh], &kv[i * t * dh..(i + 1) * t * dh], &vv[i * t * dh..(i + 1) * t * dh]);
            // Safety: qh and kh hold t x dh values, scores t x t, vh t x dh, ctx t x dh.
            unsafe { blas.sgemm(false, true, t, t, dh, 1.0, qh.as_ptr(), dh, kh.as_ptr(), dh, 0.0, scores.as_mut_ptr(), t) };
            fake_quant_slice(&mut scores, self.a.scores);
            voice_kernels::math::softmax_rows(&mut scores, t, 1.0);
            fake_quant_slice(&mut scores, self.a.probs);
            unsafe { blas.sgemm(false, false, t, dh, t, 1.0, scores.as_ptr(), t, vh.as_ptr(), dh, 0.0, ctx.as_mut_ptr(), dh) };
        }
        fake_quant_slice(&mut out, self.a.context);
        Ok(Some(Tensor::from_vec(out, (b, h, t, dh), &Device::Cpu)?))
    }

    fn new(l: &graph::LayerW, dev: &Device) -> Result<Self> {
        Ok(Self {
            attn_norm: Norm::new(&l.attn_norm, dev)?,
            attn_norm_q: l.attn_norm_q,
            a: l.attn.quant,
            q: Linear::quantized(&l.attn.q, dev, l.attn_norm_q)?,
            k: Linear::quantized(&l.attn.k, dev, l.attn_norm_q)?,
            v: Linear::quantized(&l.attn.v, dev, l.attn_norm_q)?,
            out: Linear::quantized(&l.attn.out, dev, l.attn.quant.merged)?,
            ffn_norm: Norm::new(&l.ffn_norm, dev)?,
            ffn_norm_q: l.ffn_norm_q,
            fc1: Linear::quantized(&l.fc1, dev, l.ffn_norm_q)?,
            gelu_q: l.gelu_q,
            fc2: Linear::quantized(&l.fc2, dev, l.gelu_q)?,
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
        let context = match self.attention_blas(&q, &k, &v)? {
            Some(c) => c,
            None => {
                let scores = fake_quant(&q.matmul(&k.t()?)?, self.a.scores)?;
                let probs = fake_quant(&voice_kernels::softmax_last_dim(&scores)?, self.a.probs)?;
                fake_quant(&probs.matmul(&v)?, self.a.context)?
            }
        };
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
