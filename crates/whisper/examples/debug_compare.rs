use candle_core::{Device, Tensor, IndexOp, D};
fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new("/root/.cache/voice-ai/models/whisper-tiny.en");
    let dev = Device::Cpu;
    let m = voice_whisper::WhisperModel::load("t", dir, &dev)?;
    let bytes = std::fs::read("/root/.cache/voice-ai/models/jfk-sample/jfk.wav")?;
    let pcm = voice_runtime::audio::decode_to_rate(&bytes, 16000, 600.0)?.samples;
    let opts = voice_whisper::TranscribeOptions { timestamps: false, ..Default::default() };
    let t = m.transcribe(&pcm, &opts, &|| false)?;
    println!("no-ts: {}", t.text);
    // candle-transformers reference on the same weights.
    let loaded = voice_whisper::loader::load(dir, candle_core::DType::F32, &dev)?;
    let cfg: candle_transformers::models::whisper::Config = serde_json::from_value(serde_json::json!({
        "num_mel_bins": loaded.config.num_mel_bins, "max_source_positions": 1500, "d_model": loaded.config.d_model,
        "encoder_attention_heads": loaded.config.encoder_attention_heads, "encoder_layers": loaded.config.encoder_layers,
        "vocab_size": loaded.config.vocab_size, "max_target_positions": loaded.config.max_target_positions,
        "decoder_attention_heads": loaded.config.decoder_attention_heads, "decoder_layers": loaded.config.decoder_layers}))?;
    let mut r = candle_transformers::models::whisper::model::Whisper::load(&loaded.vb, cfg)?;
    let (mel, frames) = m.mel.log_mel(&pcm, 480000);
    let mut w = vec![0f32; 80*3000];
    for i in 0..80 { for j in 0..3000.min(frames) { w[i*3000+j] = mel[i*frames+j]; } }
    let mel_t = Tensor::from_vec(w, (1, 80, 3000), &dev)?;
    let enc_ref = r.encoder.forward(&mel_t, true)?;
    let enc_ours = m.model.encoder.forward(&mel_t)?;
    println!("encoder max diff {}", (enc_ref.clone() - &enc_ours)?.abs()?.max_all()?.to_scalar::<f32>()?);
    for toks in [vec![m.tokenizer.sot], vec![m.tokenizer.sot, m.tokenizer.no_timestamps]] {
        let tt = Tensor::new(toks.as_slice(), &dev)?.unsqueeze(0)?;
        let h = r.decoder.forward(&tt, &enc_ref, true)?;
        let lref = r.decoder.final_linear(&h.i((.., toks.len()-1..))?)?.flatten_all()?;
        let mut st = m.model.decoder.start(&enc_ref)?;
        let ho = m.model.decoder.forward(&tt, &mut st)?;
        let lo = m.model.decoder.logits(&ho.i((.., toks.len()-1, ..))?)?.flatten_all()?;
        println!("n={} ref argmax {} ours argmax {} maxdiff {}", toks.len(), lref.argmax(0)?.to_scalar::<u32>()?, lo.argmax(0)?.to_scalar::<u32>()?, (lref - lo)?.abs()?.max_all()?.to_scalar::<f32>()?);
    }
    let mut toks = vec![m.tokenizer.sot, m.tokenizer.no_timestamps];
    for _ in 0..40 {
        let tt = Tensor::new(toks.as_slice(), &dev)?.unsqueeze(0)?;
        let h = r.decoder.forward(&tt, &enc_ref, true)?;
        let l = r.decoder.final_linear(&h.i((.., toks.len()-1..))?)?;
        let next = l.squeeze(0)?.squeeze(0)?.argmax(D::Minus1)?.to_scalar::<u32>()?;
        if next == m.tokenizer.eot { break; }
        toks.push(next);
    }
    println!("ref: {}", m.tokenizer.decode_text(&toks[2..])?);
    Ok(())
}
