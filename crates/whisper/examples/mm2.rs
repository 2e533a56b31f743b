use candle_core::{Device, Tensor, Module, D};
use std::time::Instant;
fn t<F: FnMut() -> candle_core::Result<Tensor>>(name: &str, mut f: F) -> Tensor { let s = Instant::now(); let r = f().unwrap(); println!("{name:30} {:?}", s.elapsed()); r }
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mel = Tensor::randn(0f32, 1., (1, 80, 3000), &dev)?;
    let w1 = Tensor::randn(0f32, 0.1, (384, 80, 3), &dev)?;
    let w2 = Tensor::randn(0f32, 0.1, (384, 384, 3), &dev)?;
    for _ in 0..2 {
    let x = t("conv1", || mel.conv1d(&w1, 1, 1, 1, 1));
    let x = t("gelu_erf 384x3000", || x.gelu_erf());
    let x = t("conv2", || x.conv1d(&w2, 1, 2, 1, 1));
    let x = t("transpose contig", || x.transpose(1,2)?.contiguous());
    let ln = candle_nn::LayerNorm::new(Tensor::ones(384, candle_core::DType::F32, &dev)?, Tensor::zeros(384, candle_core::DType::F32, &dev)?, 1e-5);
    let h = t("layernorm", || ln.forward(&x));
    let qkv = candle_nn::Linear::new(Tensor::randn(0f32, 0.05, (1152, 384), &dev)?, Some(Tensor::zeros(1152, candle_core::DType::F32, &dev)?));
    let y = t("qkv linear", || qkv.forward(&h));
    let q = t("split q", || y.narrow(2, 0, 384)?.reshape((1, 1500, 6, 64))?.transpose(1, 2)?.contiguous());
    let k = t("split k", || y.narrow(2, 384, 384)?.reshape((1, 1500, 6, 64))?.transpose(1, 2)?.contiguous());
    let v = y.narrow(2, 768, 384)?.reshape((1, 1500, 6, 64))?.transpose(1, 2)?.contiguous()?;
    let qs = t("q scale", || &q * 0.125);
    let s = t("qk^T", || qs.matmul(&k.t()?));
    let p = t("softmax", || candle_nn::ops::softmax_last_dim(&s));
    let a = t("pv", || p.matmul(&v));
    let _m = t("merge", || a.transpose(1, 2)?.reshape((1, 1500, 384)));
    let fc1 = candle_nn::Linear::new(Tensor::randn(0f32, 0.05, (1536, 384), &dev)?, Some(Tensor::zeros(1536, candle_core::DType::F32, &dev)?));
    let f = t("fc1", || fc1.forward(&h));
    let g = t("gelu_erf 1500x1536", || f.gelu_erf());
    let _g2 = t("gelu tanh 1500x1536", || f.gelu());
    let fc2 = candle_nn::Linear::new(Tensor::randn(0f32, 0.05, (384, 1536), &dev)?, Some(Tensor::zeros(384, candle_core::DType::F32, &dev)?));
    let _o = t("fc2", || fc2.forward(&g));
    let _ = t("add", || &x + &x);
    let _ = D::Minus1;
    println!("---");
    }
    Ok(())
}
