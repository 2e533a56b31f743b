#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| voice_fuzz::gguf_model(data));
