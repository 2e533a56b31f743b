//! The layers Kokoro is built from, as plain functions over candle tensors. Convolutions and
//! linear layers go through `voice-kernels` (BLAS on the CPU, candle elsewhere); the LSTM has a
//! host loop on the CPU and a device-side loop (no host round trips) on other devices.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::weights::Weights;

/// `nn.Linear`: x (..., in) -> (..., out).
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    pub fn load(ws: &Weights, name: &str, out: usize, inp: usize) -> anyhow::Result<Self> {
        Ok(Self { w: ws.get(&format!("{name}.weight"), &[out, inp])?, b: Some(ws.get(&format!("{name}.bias"), &[out])?) })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        voice_kernels::linear(x, &self.w, self.b.as_ref())
    }
}

/// `nn.Conv1d` (weight norm folded), groups 1.
#[derive(Debug, Clone)]
pub struct Conv1d {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// The int8 form ([`Conv1d::quantize`]), used on the CPU when it has VNNI.
    int8: Option<std::sync::Arc<(voice_kernels::int8::QuantConv1d, Option<Vec<f32>>)>>,
}

impl Conv1d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ws: &Weights,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        bias: bool,
    ) -> anyhow::Result<Self> {
        let w = ws.get(&format!("{name}.weight"), &[c_out, c_in, k])?;
        let b = if bias { Some(ws.get(&format!("{name}.bias"), &[c_out])?) } else { None };
        Ok(Self { w, b, stride, padding, dilation, int8: None })
    }

    /// Replace the f32 weights by an int8 form for [`voice_kernels::int8::conv1d`] (stride-1
    /// layers on a CPU with AVX-512 VNNI; elsewhere this does nothing and f32 stays). The f32
    /// weights are dropped, so the model's memory shrinks instead of holding both.
    pub fn quantize(&mut self) -> anyhow::Result<()> {
        if self.stride != 1 || !self.w.device().is_cpu() || self.w.dtype() != DType::F32 || !voice_kernels::int8::available() {
            return Ok(());
        }
        let (c_out, c_in, ks) = self.w.dims3()?;
        let q = voice_kernels::int8::QuantConv1d::from_f32(&self.w.flatten_all()?.to_vec1::<f32>()?, c_out, c_in, ks);
        let b = match &self.b {
            Some(b) => Some(b.to_vec1::<f32>()?),
            None => None,
        };
        self.int8 = Some(std::sync::Arc::new((q, b)));
        self.w = Tensor::zeros(0, DType::F32, &Device::Cpu)?;
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(q) = &self.int8 else {
            return voice_kernels::conv1d_dilated(x, &self.w, self.b.as_ref(), self.stride, self.padding, self.dilation);
        };
        let (b, c_in, t_in) = x.dims3()?;
        let (qc, bias) = (&q.0, q.1.as_deref());
        if c_in != qc.c_in || !x.device().is_cpu() {
            candle_core::bail!(
                "int8 conv1d: input ({b}, {c_in}, {t_in}) on {:?} for weights ({}, {}, {}) on the CPU",
                x.device(),
                qc.c_out,
                qc.c_in,
                qc.ks
            );
        }
        let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::new();
        for item in xv.chunks(c_in * t_in) {
            match voice_kernels::int8::conv1d(item, t_in, qc, bias, self.padding, self.dilation) {
                Some(y) => out.extend(y),
                None => candle_core::bail!("conv1d: input of {t_in} samples is shorter than the kernel span {}", self.dilation * (qc.ks - 1) + 1),
            }
        }
        let t_out = out.len() / (b * qc.c_out).max(1);
        Tensor::from_vec(out, (b, qc.c_out, t_out), x.device())
    }
}

/// `nn.ConvTranspose1d` (weight norm folded), groups 1.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    pub w: Tensor,
    pub b: Tensor,
    pub stride: usize,
    pub padding: usize,
}

impl ConvTranspose1d {
    pub fn load(ws: &Weights, name: &str, c_in: usize, c_out: usize, k: usize, stride: usize, padding: usize) -> anyhow::Result<Self> {
        Ok(Self { w: ws.get(&format!("{name}.weight"), &[c_in, c_out, k])?, b: ws.get(&format!("{name}.bias"), &[c_out])?, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        voice_kernels::conv_transpose1d(x, &self.w, Some(&self.b), self.stride, self.padding, 0)
    }
}

/// Depthwise `ConvTranspose1d(c, c, k=3, stride=2, groups=c, padding=1, output_padding=1)`: the
/// learned 2x upsampling in the prosody and decoder blocks. Output t -> 2t.
#[derive(Debug, Clone)]
pub struct DepthwiseUp2 {
    pub w: Tensor, // (c, 1, 3)
    pub b: Tensor, // (c)
}

impl DepthwiseUp2 {
    pub fn load(ws: &Weights, name: &str, c: usize) -> anyhow::Result<Self> {
        Ok(Self { w: ws.get(&format!("{name}.weight"), &[c, 1, 3])?, b: ws.get(&format!("{name}.bias"), &[c])? })
    }

    /// y[2i] = w1 x[i], y[2i+1] = w2 x[i] + w0 x[i+1] (x[t] = 0), plus bias: what the transposed
    /// convolution computes for these exact parameters, as three broadcast products.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let w = self.w.reshape((1, c, 3))?;
        let tap = |k: usize| w.narrow(2, k, 1);
        let even = x.broadcast_mul(&tap(1)?)?;
        let next = Tensor::cat(&[x.narrow(2, 1, t - 1)?, Tensor::zeros((b, c, 1), x.dtype(), x.device())?], 2)?;
        let odd = (x.broadcast_mul(&tap(2)?)? + next.broadcast_mul(&tap(0)?)?)?;
        // Interleave even/odd: (b, c, t, 2) -> (b, c, 2t).
        let y = Tensor::stack(&[even, odd], 3)?.reshape((b, c, 2 * t))?;
        y.broadcast_add(&self.b.reshape((1, c, 1))?)
    }
}

pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.maximum(&(x * slope)?)
}

/// Normalise each channel over time: (b, c, t), eps 1e-5, no affine (Kokoro's AdaIN norms are
/// affine in name only: the checkpoint leaves them at identity).
pub fn instance_norm(x: &Tensor) -> Result<Tensor> {
    // Over the last (time) axis of (b, c, t): the same computation as a plain layer norm.
    layer_norm_plain(x, 1e-5)
}

/// Layer norm over the last dimension, no affine.
pub fn layer_norm_plain(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// Layer norm over the last dimension with weight and bias.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    layer_norm_plain(x, eps)?.broadcast_mul(w)?.broadcast_add(b)
}

/// Snake activation: x + sin(a x)^2 / a, per channel, a (1, c, 1).
pub fn snake(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let s = x.broadcast_mul(alpha)?.sin()?.sqr()?;
    x + s.broadcast_div(alpha)?
}

/// `AdaIN1d`: (1 + gamma(s)) * instance_norm(x) + beta(s).
#[derive(Debug, Clone)]
pub struct AdaIn {
    pub fc: Linear,
    pub c: usize,
}

impl AdaIn {
    pub fn load(ws: &Weights, name: &str, style: usize, c: usize) -> anyhow::Result<Self> {
        Ok(Self { fc: Linear::load(ws, &format!("{name}.fc"), 2 * c, style)?, c })
    }

    /// AdaIN then an activation, fused into one pass on the CPU ([`crate::fused`]).
    pub fn forward_act(&self, x: &Tensor, s: &Tensor, act: crate::fused::Act) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && x.dim(0)? == 1 {
            let h = self.fc.forward(s)?.flatten_all()?.to_vec1::<f32>()?;
            let (gamma, beta) = h.split_at(self.c);
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let y = crate::fused::adain_act(&xv, self.c, gamma, beta, act);
            return Tensor::from_vec(y, x.dims(), x.device());
        }
        let y = self.forward(x, s)?;
        match act {
            crate::fused::Act::Snake(alpha) => snake(&y, &Tensor::from_slice(alpha, (1, alpha.len(), 1), x.device())?),
            crate::fused::Act::LeakyRelu(slope) => leaky_relu(&y, slope as f64),
        }
    }

    /// x (1, c, t), s (1, style).
    pub fn forward(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let h = self.fc.forward(s)?; // (1, 2c)
        let gamma = (h.narrow(1, 0, self.c)?.unsqueeze(2)? + 1.0)?;
        let beta = h.narrow(1, self.c, self.c)?.unsqueeze(2)?;
        instance_norm(x)?.broadcast_mul(&gamma)?.broadcast_add(&beta)
    }
}

/// One direction of a single-layer LSTM, PyTorch gate order (i, f, g, o).
#[derive(Debug, Clone)]
struct LstmDir {
    w_ih: Tensor, // (4h, in)
    w_hh: Tensor, // (4h, h)
    bias: Tensor, // b_ih + b_hh (4h)
    /// Host copy of w_hh for the CPU recurrence.
    w_hh_host: Option<Vec<f32>>,
}

/// Bidirectional single-layer LSTM, batch 1: x (t, in) -> (t, 2h).
#[derive(Debug, Clone)]
pub struct BiLstm {
    fwd: LstmDir,
    bwd: LstmDir,
    pub hidden: usize,
}

impl BiLstm {
    pub fn load(ws: &Weights, name: &str, inp: usize, hidden: usize) -> anyhow::Result<Self> {
        let dir = |suffix: &str| -> anyhow::Result<LstmDir> {
            let w_ih = ws.get(&format!("{name}.weight_ih_l0{suffix}"), &[4 * hidden, inp])?;
            let w_hh = ws.get(&format!("{name}.weight_hh_l0{suffix}"), &[4 * hidden, hidden])?;
            let bias =
                (ws.get(&format!("{name}.bias_ih_l0{suffix}"), &[4 * hidden])? + ws.get(&format!("{name}.bias_hh_l0{suffix}"), &[4 * hidden])?)?;
            let w_hh_host = if w_hh.device().is_cpu() { Some(w_hh.flatten_all()?.to_vec1::<f32>()?) } else { None };
            Ok(LstmDir { w_ih, w_hh, bias, w_hh_host })
        };
        Ok(Self { fwd: dir("")?, bwd: dir("_reverse")?, hidden })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.run(&self.fwd, x, false)?;
        let b = self.run(&self.bwd, x, true)?;
        Tensor::cat(&[f, b], 1)
    }

    fn run(&self, d: &LstmDir, x: &Tensor, reverse: bool) -> Result<Tensor> {
        let t = x.dim(0)?;
        let h = self.hidden;
        // Input contributions for every step at once: one product instead of t.
        let gx = voice_kernels::linear(x, &d.w_ih, Some(&d.bias))?; // (t, 4h)
        if let Some(w_hh) = &d.w_hh_host {
            let gx = gx.flatten_all()?.to_vec1::<f32>()?;
            let mut out = vec![0f32; t * h];
            let (mut hs, mut cs) = (vec![0f32; h], vec![0f32; h]);
            let mut g = vec![0f32; 4 * h];
            for step in 0..t {
                let ti = if reverse { t - 1 - step } else { step };
                for (r, gr) in g.iter_mut().enumerate() {
                    *gr = gx[ti * 4 * h + r] + voice_kernels::gemv::dot_f32(&w_hh[r * h..(r + 1) * h], &hs);
                }
                for j in 0..h {
                    let i = sigmoid(g[j]);
                    let f = sigmoid(g[h + j]);
                    let gg = g[2 * h + j].tanh();
                    let o = sigmoid(g[3 * h + j]);
                    cs[j] = f * cs[j] + i * gg;
                    hs[j] = o * cs[j].tanh();
                }
                out[ti * h..(ti + 1) * h].copy_from_slice(&hs);
            }
            return Tensor::from_vec(out, (t, h), &Device::Cpu);
        }
        // Device loop: every step stays on the device; nothing is read back until the end.
        let w_hh_t = d.w_hh.t()?;
        let mut hs = Tensor::zeros((1, h), DType::F32, x.device())?;
        let mut cs = hs.clone();
        let mut outs = vec![hs.clone(); t];
        for step in 0..t {
            let ti = if reverse { t - 1 - step } else { step };
            let g = (gx.narrow(0, ti, 1)? + hs.matmul(&w_hh_t)?)?;
            let i = candle_nn::ops::sigmoid(&g.narrow(1, 0, h)?)?;
            let f = candle_nn::ops::sigmoid(&g.narrow(1, h, h)?)?;
            let gg = g.narrow(1, 2 * h, h)?.tanh()?;
            let o = candle_nn::ops::sigmoid(&g.narrow(1, 3 * h, h)?)?;
            cs = ((f * &cs)? + (i * gg)?)?;
            hs = (o * cs.tanh()?)?;
            outs[ti] = hs.clone();
        }
        Tensor::cat(&outs, 0)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
