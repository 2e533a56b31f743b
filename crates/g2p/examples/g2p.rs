//! `cargo run -p voice-g2p --example g2p -- [--gb] DATA_DIR "text"`: print the normalised text
//! and phonemes of a text (one line per argument, or stdin lines).
use std::io::BufRead;
use std::path::PathBuf;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let variant = if args.first().map(String::as_str) == Some("--gb") {
        args.remove(0);
        voice_g2p::Variant::Gb
    } else {
        voice_g2p::Variant::Us
    };
    if args.is_empty() {
        eprintln!("usage: g2p [--gb] DATA_DIR [TEXT...]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(args.remove(0));
    let g2p = voice_g2p::G2p::load(&dir, variant).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let texts: Vec<String> = if args.is_empty() { std::io::stdin().lock().lines().map_while(Result::ok).collect() } else { args };
    for t in texts {
        println!("{}", voice_g2p::normalize(&t));
        match g2p.phonemize(&t) {
            Ok(ps) => println!("{ps}"),
            Err(e) => println!("error: {e}"),
        }
    }
}
