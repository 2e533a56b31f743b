use candle_core::{Device, Tensor, DType};
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    println!("threads {} avx {} f16c {}", candle_core::utils::get_num_threads(), candle_core::utils::with_avx(), candle_core::utils::with_f16c());
    let a = Tensor::randn(0f32, 1., (1500, 384), &dev)?;
    let b = Tensor::randn(0f32, 1., (384, 768), &dev)?;
    let bt = Tensor::randn(0f32, 1., (768, 384), &dev)?;
    for _ in 0..3 {
        let t = Instant::now(); let _ = a.matmul(&b)?; let e = t.elapsed();
        println!("mm 1500x384x768 {:?} = {:.1} GFLOPS", e, 2.0*1500.0*384.0*768.0/e.as_secs_f64()/1e9);
        let t = Instant::now(); let _ = a.matmul(&bt.t()?)?; let e = t.elapsed();
        println!("mm t 1500x384x768 {:?} = {:.1} GFLOPS", e, 2.0*1500.0*384.0*768.0/e.as_secs_f64()/1e9);
        let lin = candle_nn::Linear::new(bt.clone(), None);
        let a3 = a.unsqueeze(0)?;
        let t = Instant::now(); let _ = candle_core::Module::forward(&lin, &a3)?; let e = t.elapsed();
        println!("linear {:?} = {:.1} GFLOPS", e, 2.0*1500.0*384.0*768.0/e.as_secs_f64()/1e9);
        let x = Tensor::randn(0f32, 1., (1, 384), &dev)?;
        let e_t = Tensor::randn(0f32, 1., (384, 51864), &dev)?;
        let t = Instant::now(); let _ = x.matmul(&e_t)?; println!("logits {:?}", t.elapsed());
        let e_n = Tensor::randn(0f32, 1., (51864, 384), &dev)?;
        let t = Instant::now(); let _ = x.matmul(&e_n.t()?)?; println!("logits via t {:?}", t.elapsed());
        let x1 = Tensor::randn(0f32, 1., (1, 1, 384), &dev)?;
        let l2 = candle_nn::Linear::new(Tensor::randn(0f32, 1., (1152, 384), &dev)?, None);
        let t = Instant::now(); for _ in 0..100 { let _ = candle_core::Module::forward(&l2, &x1)?; } println!("100 small linears {:?}", t.elapsed());
        let t = Instant::now(); for _ in 0..100 { let _ = x1.gelu_erf()?; } println!("100 small gelu {:?}", t.elapsed());
        let _ = DType::F32;
    }
    Ok(())
}
