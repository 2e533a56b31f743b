//! Debug: synthesize the reference tokens and compare with onnxruntime's intermediates.
use candle_core::Device;
fn read_npy(p: &str) -> Vec<f32> {
    candle_core::Tensor::read_npy(p).unwrap().flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap()
}
fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("onnx path");
    let t0 = std::time::Instant::now();
    let ws = voice_kokoro::Weights::from_onnx(std::path::Path::new(&path), &Device::Cpu)?;
    let m = voice_kokoro::Kokoro::new(&ws, &Device::Cpu)?;
    eprintln!("load {:?}", t0.elapsed());
    let tokens: Vec<i64> = candle_core::Tensor::read_npy("/tmp/kk/ref/tokens.npy")?.flatten_all()?.to_vec1::<i64>()?;
    let style = read_npy("/tmp/kk/ref/style.npy");
    let t0 = std::time::Instant::now();
    let out = m.forward(&tokens, &style, 1.0)?;
    eprintln!("forward {:?} audio {} stages {:?}", t0.elapsed(), out.audio.len(), out.stage_ms);
    let rd = read_npy("/tmp/kk/ref/dur.npy");
    println!("dur ours {:?}\ndur ref  {:?}", out.durations, rd);
    let rf0 = read_npy("/tmp/kk/ref/f0.npy");
    let n = rf0.len().min(out.f0.len());
    let err: f32 = (0..n).map(|i| (rf0[i] - out.f0[i]).abs()).sum::<f32>() / n as f32;
    println!("f0 mean abs err {err} (ref mean {})", rf0.iter().map(|v| v.abs()).sum::<f32>() / rf0.len() as f32);
    let ra = read_npy("/tmp/kk/ref/audio.npy");
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    println!("audio rms ours {} ref {} len {} {}", rms(&out.audio), rms(&ra), out.audio.len(), ra.len());
    let mut wav = Vec::new();
    for v in &out.audio {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write("/tmp/kk/ours.f32", wav)?;
    Ok(())
}
