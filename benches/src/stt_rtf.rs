//! Speech-to-text benchmark: real-time factor and WER of our Whisper, for one or more models
//! and encoder windows, on up to three sets:
//! - `standard`: JFK + the LibriVox utterances of Debian's pocketsphinx-testdata (real speech);
//! - `cards`: pocketsphinx-testdata's five spoken card names ("ten of clubs"; real speech, 1-3 s);
//! - `questions`: agent-bench's ten questions in its two Kokoro voices (the agent's workload).
//!
//! Peers are run by `benches/stt_peer.py` on the standard set; `benches/run-stt-bench.sh` runs
//! both in one go and prints the ratios. `--window fit` (or `fit:MS` for another padding) is the
//! utterance-sized encoder window the voice agent's streams use; configurations run interleaved.
//!
//!   stt-rtf --model whisper-tiny.en --window full --window fit --set standard --set cards --set questions

#[path = "common.rs"]
mod common;
use common::{agent_question_voice, rss_mb, trim_end, Speaker, AGENT_QUESTIONS};

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use voice_models::Fetcher;
use voice_runtime::{audio, device};
use voice_whisper::{eval, EncoderWindow, TranscribeOptions, WhisperModel};

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
    /// Encoder windows to compare: `full` (30 s), `fit` (the defaults: the audio + 1.5 s, for
    /// audio up to 4 s) or `fit:MS` (the audio + MS milliseconds, for audio up to 30 s).
    #[arg(long = "window", default_values_t = vec!["full".to_string()])]
    windows: Vec<String>,
    /// Transcribe without timestamps (as the voice agent's streams do).
    #[arg(long)]
    no_timestamps: bool,
    /// Cut each utterance's trailing quiet (below 5 % of its loudest 10 ms) and append this many
    /// ms of digital silence: the audio as the voice agent sends it at the end of a turn.
    #[arg(long)]
    trailing_ms: Option<usize>,
    /// Utterance sets: standard, cards, questions.
    #[arg(long = "set", default_values_t = vec!["standard".to_string()])]
    sets: Vec<String>,
}

fn parse_window(w: &str) -> Result<EncoderWindow> {
    Ok(match w {
        "full" => EncoderWindow::Full,
        "fit" => EncoderWindow::fit(),
        _ => match w.strip_prefix("fit:").map(str::parse::<f32>) {
            Some(Ok(ms)) if ms >= 0.0 => EncoderWindow::Fit { pad_seconds: ms / 1000.0, max_audio_seconds: 30.0 },
            _ => bail!("--window {w}: expected full, fit or fit:MS"),
        },
    })
}

/// The utterances of the named sets with their reference texts, as 16 kHz samples.
fn load_sets(names: &[String]) -> Result<Vec<(String, String, Vec<f32>)>> {
    let read = |path: &std::path::Path| -> Result<Vec<f32>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(audio::decode_to_rate(&bytes, 16_000, 600.0)?.samples)
    };
    let mut out = Vec::new();
    for name in names {
        match name.as_str() {
            "standard" => {
                let jfk = Fetcher::new(None).resolve("jfk-sample", true, &[])?.dir.join("jfk.wav");
                for u in eval::standard_set(&jfk)? {
                    out.push((u.name, u.reference, read(&u.wav)?));
                }
            }
            "cards" => {
                for u in eval::cards_set()? {
                    out.push((format!("cards-{}", u.name), u.reference, read(&u.wav)?));
                }
            }
            "questions" => {
                let speaker = Speaker::load()?;
                for (i, q) in AGENT_QUESTIONS.iter().enumerate() {
                    for k in 0..2 {
                        let voice = agent_question_voice(i + k);
                        out.push((format!("question{:02}-{voice}", i + 1), q.to_string(), speaker.speak(q, voice, 16_000)?));
                    }
                }
            }
            other => bail!("--set {other}: expected standard, cards or questions"),
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct ModelResult {
    model: String,
    window: String,
    device: String,
    audio_seconds: f64,
    words: usize,
    errors: usize,
    wer: f64,
    /// Utterances whose fitted window was kept (the rest fell back to 30 s).
    fitted_windows_kept: usize,
    utterances: usize,
    rtf_runs: Vec<f64>,
    rtf_median: f64,
    /// Median over utterances of the median time per utterance, in ms.
    utterance_ms_median: f64,
    load_seconds: f64,
    rss_mb_after_load: f64,
    rss_mb_peak: f64,
    texts: Vec<(String, usize, String)>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let fetcher = Fetcher::new(None);
    let mut set = load_sets(&args.sets)?;
    if let Some(ms) = args.trailing_ms {
        for (_, _, a) in &mut set {
            let speech = trim_end(a).len();
            a.truncate(speech);
            a.resize(a.len() + ms * 16, 0.0);
        }
    }
    let windows: Vec<(String, EncoderWindow)> = args.windows.iter().map(|w| Ok((w.clone(), parse_window(w)?))).collect::<Result<_>>()?;
    let audio_seconds: f64 = set.iter().map(|(_, _, a)| a.len() as f64 / 16_000.0).sum();
    let chosen = device::select_device(args.device);
    let mut results = Vec::new();
    for id in &args.models {
        let dir = fetcher.resolve(id, true, &["config.json", "tokenizer.json", "model.safetensors"])?.dir;
        let t0 = Instant::now();
        let model = WhisperModel::load(id, &dir, &chosen.device)?;
        let load_seconds = t0.elapsed().as_secs_f64();
        let rss_after_load = rss_mb("VmRSS:");
        // [window][utterance] -> times; [window] -> run totals.
        let mut times = vec![vec![Vec::new(); set.len()]; windows.len()];
        let mut totals = vec![Vec::new(); windows.len()];
        let mut first: Vec<Vec<voice_whisper::Transcript>> = vec![Vec::new(); windows.len()];
        for run in 0..args.runs.max(1) {
            // Interleaved: every window runs once per round, so drift on a shared machine hits all alike.
            for (w, (_, window)) in windows.iter().enumerate() {
                let opts = TranscribeOptions { language: Some("en".into()), window: *window, timestamps: !args.no_timestamps, ..Default::default() };
                let t = Instant::now();
                for (u, (_, _, pcm)) in set.iter().enumerate() {
                    let t1 = Instant::now();
                    let tr = model.transcribe(pcm, &opts, &|| false)?;
                    times[w][u].push(t1.elapsed().as_secs_f64() * 1e3);
                    if run == 0 {
                        first[w].push(tr);
                    }
                }
                totals[w].push(t.elapsed().as_secs_f64() / audio_seconds);
            }
        }
        for (w, (label, _)) in windows.iter().enumerate() {
            let (mut errors, mut words, mut kept) = (0, 0, 0);
            let mut texts = Vec::new();
            for (u, ((name, reference, pcm), tr)) in set.iter().zip(&first[w]).enumerate() {
                let (e, n) = eval::word_errors(reference, &tr.text);
                errors += e;
                words += n;
                kept += usize::from(tr.fitted_window());
                if args.verbose || e > 0 {
                    println!(
                        "  [{id} {label}] {name} ({:.2} s, window {:.1} s, temperatures {:?}, {:.0} ms, {e} errors): {}",
                        pcm.len() as f64 / 16_000.0,
                        tr.window_seconds,
                        tr.segments.iter().map(|s| s.temperature).collect::<Vec<_>>(),
                        common::median(&times[w][u]),
                        tr.text
                    );
                }
                texts.push((name.clone(), e, tr.text.clone()));
            }
            let per_utterance: Vec<f64> = times[w].iter().map(|t| common::median(t)).collect();
            let r = ModelResult {
                model: id.clone(),
                window: label.clone(),
                device: chosen.label.clone(),
                audio_seconds,
                words,
                errors,
                wer: errors as f64 / words.max(1) as f64,
                fitted_windows_kept: kept,
                utterances: set.len(),
                rtf_median: common::median(&totals[w]),
                rtf_runs: totals[w].clone(),
                utterance_ms_median: common::median(&per_utterance),
                load_seconds,
                rss_mb_after_load: rss_after_load,
                rss_mb_peak: rss_mb("VmHWM:"),
                texts,
            };
            println!(
                "ours {:<16} {} window {:<9} RTF {:.4} (median of {}), per utterance {:.0} ms (median), WER {:.2}% ({}/{} words), fitted windows kept {}/{}, load {:.2}s, RSS {:.0} MB after load, peak {:.0} MB",
                r.model,
                r.device,
                r.window,
                r.rtf_median,
                r.rtf_runs.len(),
                r.utterance_ms_median,
                r.wer * 100.0,
                r.errors,
                r.words,
                r.fitted_windows_kept,
                r.utterances,
                r.load_seconds,
                r.rss_mb_after_load,
                r.rss_mb_peak
            );
            results.push(r);
        }
    }
    if let Some(p) = args.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}
