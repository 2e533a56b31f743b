//! A corrupt or truncated model file is an error, never a panic or a runaway allocation: the real
//! registry ONNX truncated at many points and with bytes flipped, plus arbitrary bytes
//! (proptest), through the loader and the model constructor.

use proptest::prelude::*;

fn model_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = voice_models::Fetcher::new(None).resolve("kokoro-82m", true, &[]).expect("fetching kokoro-82m").dir;
        std::fs::read(dir.join("model.onnx")).unwrap()
    })
}

fn load(bytes: Vec<u8>) -> anyhow::Result<()> {
    let params = voice_kokoro::onnx::parse(bytes)?;
    let map = params
        .into_iter()
        .map(|(k, v)| Ok((k, candle_core::Tensor::from_vec(v.data, v.shape, &candle_core::Device::Cpu)?)))
        .collect::<anyhow::Result<_>>()?;
    voice_kokoro::Kokoro::new(&voice_kokoro::Weights::from_map(map), &candle_core::Device::Cpu)?;
    Ok(())
}

#[test]
fn truncated_files_are_errors() {
    let full = model_bytes();
    for frac in [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999] {
        let n = (full.len() as f64 * frac) as usize;
        assert!(load(full[..n].to_vec()).is_err(), "truncated at {n} bytes was accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Bytes flipped anywhere in the file: Ok (a flip inside weight data is just other weights)
    /// or an error, never a panic.
    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..8)) {
        let mut b = model_bytes().to_vec();
        for (pos, v) in flips {
            let i = ((b.len() - 1) as f64 * pos) as usize;
            b[i] ^= v | 1;
        }
        let _ = load(b);
    }

    #[test]
    fn arbitrary_bytes_are_errors(b in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(load(b).is_err());
    }
}
