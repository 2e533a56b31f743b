use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new("/root/.cache/voice-ai/models/whisper-tiny.en");
    let dev = Device::Cpu;
    let m = voice_whisper::WhisperModel::load("t", dir, &dev)?;
    let bytes = std::fs::read("/root/.cache/voice-ai/models/jfk-sample/jfk.wav")?;
    let pcm = voice_runtime::audio::decode_to_rate(&bytes, 16000, 600.0)?.samples;
    let t = Instant::now();
    let (mel, frames) = m.mel.log_mel(&pcm, 480000);
    println!("mel {:?}", t.elapsed());
    let mut w = vec![0f32; 80*3000];
    for i in 0..80 { for j in 0..3000.min(frames) { w[i*3000+j] = mel[i*frames+j]; } }
    let mel_t = Tensor::from_vec(w, (1, 80, 3000), &dev)?;
    for _ in 0..3 {
        let t = Instant::now();
        let enc = m.model.encoder.forward(&mel_t)?;
        println!("encoder {:?}", t.elapsed());
        let t = Instant::now();
        let mut st = m.model.decoder.start(&enc)?;
        println!("cross kv {:?}", t.elapsed());
        let t = Instant::now();
        let tt = Tensor::new(&[[m.tokenizer.sot]], &dev)?;
        let mut h = m.model.decoder.forward(&tt, &mut st)?;
        for _ in 0..30 { let l = m.model.decoder.logits(&h.squeeze(1)?)?; let _ = l.argmax(1)?.to_vec1::<u32>()?; h = m.model.decoder.forward(&Tensor::new(&[[440u32]], &dev)?, &mut st)?; }
        println!("30 decoder steps {:?}", t.elapsed());
    }
    let t = Instant::now();
    let r = m.transcribe(&pcm, &Default::default(), &|| false)?;
    println!("transcribe {:?} {}", t.elapsed(), r.text);
    Ok(())
}
