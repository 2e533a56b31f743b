//! The same forward pass as candle tensor ops on any device (CUDA with the `cuda` feature). For a
//! model this small the per-op launch cost dominates, so the CPU default is [`crate::host`]; this
//! path serves callers that want the weights on another device, and is checked against the host
//! loops and onnxruntime in the tests.

use candle_core::{Device, Result, Tensor, D};
use candle_nn::ops::sigmoid;

use crate::host::{BINS, HIDDEN, HOP, PADDED};
use crate::weights::HostParams;

struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
}

impl Conv {
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        x.conv1d(&self.w, 1, self.stride, 1, 1)?.broadcast_add(&self.b)?.relu()
    }
}

pub(crate) struct CandleModel {
    device: Device,
    basis: Tensor,
    convs: [Conv; 4],
    /// W_ih^T, W_hh^T: (128, 512).
    w_ih_t: Tensor,
    w_hh_t: Tensor,
    /// b_ih + b_hh: (512,).
    b_lstm: Tensor,
    /// (128, 1) and (1,).
    w_out: Tensor,
    b_out: Tensor,
}

impl CandleModel {
    pub fn new(p: &HostParams, device: &Device) -> Result<Self> {
        let t = |name: &str, shape: &[usize]| Tensor::from_slice(p.get(name), shape, device);
        let conv = |n: &str, c_out: usize, c_in: usize, stride| -> Result<Conv> {
            Ok(Conv { w: t(&format!("{n}.weight"), &[c_out, c_in, 3])?, b: t(&format!("{n}.bias"), &[c_out, 1])?, stride })
        };
        let b_lstm: Vec<f32> = p.get("lstm_cell.bias_ih").iter().zip(p.get("lstm_cell.bias_hh")).map(|(a, b)| a + b).collect();
        Ok(Self {
            device: device.clone(),
            basis: t("stft_conv.weight", &[2 * BINS, 1, 256])?,
            convs: [conv("conv1", 128, BINS, 1)?, conv("conv2", 64, 128, 2)?, conv("conv3", 64, 64, 2)?, conv("conv4", 128, 64, 1)?],
            w_ih_t: t("lstm_cell.weight_ih", &[4 * HIDDEN, HIDDEN])?.t()?.contiguous()?,
            w_hh_t: t("lstm_cell.weight_hh", &[4 * HIDDEN, HIDDEN])?.t()?.contiguous()?,
            b_lstm: Tensor::from_vec(b_lstm, 4 * HIDDEN, device)?,
            w_out: t("final_conv.weight", &[HIDDEN, 1])?,
            b_out: t("final_conv.bias", &[1])?,
        })
    }

    /// One window from the padded input `x`; `h`, `c` are updated; returns the probability.
    pub fn forward(&self, x: &[f32; PADDED], h: &mut [f32; HIDDEN], c: &mut [f32; HIDDEN]) -> Result<f32> {
        let dev = &self.device;
        let x = Tensor::from_slice(x, (1, 1, PADDED), dev)?;
        let spec = x.conv1d(&self.basis, 0, HOP, 1, 1)?; // (1, 258, 4)
        let re = spec.narrow(1, 0, BINS)?;
        let im = spec.narrow(1, BINS, BINS)?;
        let mut y = (re.sqr()? + im.sqr()?)?.sqrt()?;
        for conv in &self.convs {
            y = conv.forward_relu(&y)?;
        }
        let feat = y.squeeze(D::Minus1)?; // (1, 128)
        let h0 = Tensor::from_slice(&h[..], (1, HIDDEN), dev)?;
        let c0 = Tensor::from_slice(&c[..], (1, HIDDEN), dev)?;
        let gates = (feat.matmul(&self.w_ih_t)? + h0.matmul(&self.w_hh_t)?)?.broadcast_add(&self.b_lstm)?;
        let gate = |k: usize| gates.narrow(1, k * HIDDEN, HIDDEN);
        let (i, f, g, o) = (sigmoid(&gate(0)?)?, sigmoid(&gate(1)?)?, gate(2)?.tanh()?, sigmoid(&gate(3)?)?);
        let c1 = ((f * c0)? + (i * g)?)?;
        let h1 = (o * c1.tanh()?)?;
        let p = sigmoid(&h1.relu()?.matmul(&self.w_out)?.broadcast_add(&self.b_out)?)?;
        let (hv, cv) = (h1.flatten_all()?.to_vec1::<f32>()?, c1.flatten_all()?.to_vec1::<f32>()?);
        h.copy_from_slice(&hv);
        c.copy_from_slice(&cv);
        p.flatten_all()?.to_vec1::<f32>()?.first().copied().ok_or_else(|| candle_core::Error::Msg("empty decoder output".into()))
    }
}
