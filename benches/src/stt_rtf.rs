//! Speech-to-text benchmark: real-time factor and WER of our Whisper on the standard English set
//! (JFK + LibriVox), for one or more models. Peers are run by `benches/stt_peer.py` on the same
//! files; `benches/run-stt-bench.sh` runs both in one go and prints the ratios.
//!
//!   stt-rtf --model whisper-tiny.en --model whisper-base --runs 3 --json out.json

#[path = "common.rs"]
mod common;
use common::rss_mb;

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use voice_models::Fetcher;
use voice_runtime::{audio, device};
use voice_whisper::{eval, TranscribeOptions, WhisperModel};

#[derive(Parser)]
struct Args {
    #[arg(long = "model", default_values_t = vec!["whisper-tiny.en".to_string()])]
    models: Vec<String>,
    /// Timed repetitions over the whole set (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "cpu")]
    device: device::DeviceSpec,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Print each transcript.
    #[arg(long)]
    verbose: bool,
}

#[derive(Serialize)]
struct ModelResult {
    model: String,
    device: String,
    audio_seconds: f64,
    words: usize,
    errors: usize,
    wer: f64,
    rtf_runs: Vec<f64>,
    rtf_median: f64,
    load_seconds: f64,
    rss_mb_after_load: f64,
    rss_mb_peak: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let fetcher = Fetcher::new(None);
    let jfk = fetcher.resolve("jfk-sample", true, &[])?.dir.join("jfk.wav");
    let set = eval::standard_set(&jfk)?;
    let audio: Vec<Vec<f32>> = set
        .iter()
        .map(|u| {
            let bytes = std::fs::read(&u.wav).with_context(|| format!("reading {}", u.wav.display()))?;
            Ok(audio::decode_to_rate(&bytes, 16_000, 600.0)?.samples)
        })
        .collect::<Result<_>>()?;
    let audio_seconds: f64 = audio.iter().map(|a| a.len() as f64 / 16_000.0).sum();
    let chosen = device::select_device(args.device);
    let mut results = Vec::new();
    for id in &args.models {
        let dir = fetcher.resolve(id, true, &["config.json", "tokenizer.json", "model.safetensors"])?.dir;
        let t0 = Instant::now();
        let model = WhisperModel::load(id, &dir, &chosen.device)?;
        let load_seconds = t0.elapsed().as_secs_f64();
        let rss_after_load = rss_mb("VmRSS:");
        let opts = TranscribeOptions { language: Some("en".into()), ..Default::default() };
        let mut rtfs = Vec::new();
        let (mut errors, mut words) = (0, 0);
        for run in 0..args.runs.max(1) {
            let t = Instant::now();
            let mut texts = Vec::new();
            for (u, pcm) in set.iter().zip(&audio) {
                let t1 = Instant::now();
                let tr = model.transcribe(pcm, &opts, &|| false)?;
                if args.verbose && run == 0 {
                    let temps: Vec<f32> = tr.segments.iter().map(|s| s.temperature).collect();
                    println!(
                        "  [{id}] {}: {:.2} s audio in {:.3} s, {} segments, temperatures {temps:?}",
                        u.name,
                        pcm.len() as f64 / 16_000.0,
                        t1.elapsed().as_secs_f64(),
                        tr.segments.len()
                    );
                }
                texts.push(tr.text);
            }
            rtfs.push(t.elapsed().as_secs_f64() / audio_seconds);
            if run == 0 {
                for (u, text) in set.iter().zip(&texts) {
                    let (e, n) = eval::word_errors(&u.reference, text);
                    errors += e;
                    words += n;
                    if args.verbose || e > 0 {
                        println!("  [{id}] {} ({e} errors): {text}", u.name);
                    }
                }
            }
        }
        let mut sorted = rtfs.clone();
        sorted.sort_by(f64::total_cmp);
        let r = ModelResult {
            model: id.clone(),
            device: chosen.label.clone(),
            audio_seconds,
            words,
            errors,
            wer: errors as f64 / words.max(1) as f64,
            rtf_median: sorted[sorted.len() / 2],
            rtf_runs: rtfs,
            load_seconds,
            rss_mb_after_load: rss_after_load,
            rss_mb_peak: rss_mb("VmHWM:"),
        };
        println!(
            "ours {:<16} {}: RTF {:.4} (median of {}), WER {:.1}% ({}/{} words), load {:.2}s, RSS {:.0} MB after load, peak {:.0} MB",
            r.model,
            r.device,
            r.rtf_median,
            r.rtf_runs.len(),
            r.wer * 100.0,
            r.errors,
            r.words,
            r.load_seconds,
            r.rss_mb_after_load,
            r.rss_mb_peak
        );
        results.push(r);
    }
    if let Some(p) = args.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}
