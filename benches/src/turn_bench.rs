//! Semantic end of turn on a labelled set: is the speaker finished after a 200 ms pause?
//!
//! The set (built here, deterministic, written to `--out` as WAVs + labels.json so the peer
//! script scores exactly the same audio):
//! - real speech, LibriVox (Debian pocketsphinx-testdata): each of the 5 read sentences whole
//!   ("complete"), and cut at the longest pauses between words inside it ("incomplete", at most 2
//!   per sentence);
//! - real speech, JFK (jfk-sample): the sentence at each of its 4 mid-sentence pauses
//!   ("incomplete"; the recording's own pauses, 330-1160 ms long) and at its end ("complete");
//! - Kokoro speech (two voices): 10 finished questions and statements ("complete") and 10
//!   unfinished phrases ("I would like to book a table for", "incomplete").
//!
//! Every sample is the speech up to the pause plus 200 ms of silence: what the agent has when it
//! asks the model (`--end-of-turn-silence 200ms`). For each, Smart Turn's probability (ours) and
//! the decision (complete when > 0.5), the fixed-silence rules for comparison (a 200 ms rule
//! ends the turn on every pause; the 500 ms rule on every pause of 500 ms or more, known for JFK
//! only), and the CPU time of one decision (features + network).
//!
//! The set is built once into `--out` (Kokoro synthesis is deterministic) and read back from
//! there on later runs (`--rebuild` makes it again). benches/run-turn-bench.sh runs this and
//! onnxruntime (benches/turn_peer.py) on the same files, in interleaved rounds.

#[path = "common.rs"]
mod common;
use common::{trim_end, window_rms, Speaker};

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Parser;
use serde::Serialize;
use voice_smart_turn::SmartTurn;

const SR: usize = 16_000;
const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

const COMPLETE: [&str; 10] = [
    "What is the capital of France?",
    "Can you tell me a joke?",
    "I would like to book a table for four people.",
    "Thank you, that is all I needed.",
    "What time does the train to Berlin leave?",
    "Please turn off the lights in the kitchen.",
    "How far away is the moon?",
    "My name is Anna and I live in Paris.",
    "Tell me about the history of Rome.",
    "That sounds great, let's do it.",
];
const INCOMPLETE: [&str; 10] = [
    "I would like to book a table for",
    "Can you tell me about the",
    "What is the name of the",
    "My favourite colour is",
    "I was wondering if you could",
    "So the thing is that",
    "Could you remind me to",
    "The capital of France is",
    "I need to buy some milk and",
    "Let me think about",
];
/// JFK's speech spans in seconds (hand-labelled, as in crates/vad/tests/golden.rs): "And so my
/// fellow Americans | ask not | what | your country can do for you | ask what you can do for
/// your country."
const JFK_SPEECH: [(f64, f64); 5] = [(0.35, 2.10), (3.30, 3.70), (4.03, 4.25), (5.41, 7.55), (8.19, 10.45)];

#[derive(Parser)]
#[command(about = "Smart Turn on a labelled set of pauses: accuracy and time per decision")]
struct Args {
    /// Where the labelled set is written (WAVs and labels.json).
    #[arg(long)]
    out: PathBuf,
    /// Timed decisions per sample (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only build the set (for the peer), do not score it.
    #[arg(long)]
    build_only: bool,
    /// Build the set again even if `--out` holds one.
    #[arg(long)]
    rebuild: bool,
    /// Silence after the speech in each sample (what the model hears when it is asked).
    #[arg(long, default_value_t = 200)]
    pause_ms: usize,
    /// Also transcribe each sample (whisper-tiny.en, the stream's fitted window) and score the
    /// rule "finished when Smart Turn says so or the transcript ends with a question mark".
    #[arg(long)]
    transcribe: bool,
}

#[derive(Serialize, serde::Deserialize, Clone)]
struct Sample {
    name: String,
    source: String,
    complete: bool,
    /// The real pause that follows, when known (JFK): what the 500 ms rule would do.
    pause_ms: Option<u32>,
}

#[derive(Serialize)]
struct Scored {
    #[serde(flatten)]
    sample: Sample,
    probability: f32,
    decision_ms: f64,
    transcript: Option<String>,
}

fn fetch(id: &str) -> Result<PathBuf> {
    Ok(voice_models::Fetcher::new(None).resolve(id, true, &[]).with_context(|| format!("fetching {id}"))?.dir)
}

fn wav16k(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(voice_runtime::audio::decode_to_rate(&bytes, SR as u32, 120.0)?.samples)
}

/// Cut points inside a sentence: the starts of its longest quiet stretches (>= 60 ms below 5 %
/// of the peak window RMS) between 25 % and 85 % of it, longest first, at most `n`.
fn pauses_inside(a: &[f32], n: usize) -> Vec<usize> {
    let rms = window_rms(a);
    let peak = rms.iter().fold(0f32, |m, &v| m.max(v));
    let (lo, hi) = (rms.len() / 4, rms.len() * 85 / 100);
    let mut runs = Vec::new();
    let mut i = lo;
    while i < hi {
        if rms[i] < 0.05 * peak {
            let start = i;
            while i < hi && rms[i] < 0.05 * peak {
                i += 1;
            }
            if i - start >= 6 {
                runs.push((i - start, start));
            }
        }
        i += 1;
    }
    runs.sort_by(|a, b| b.cmp(a));
    runs.into_iter().take(n).map(|(_, start)| start * SR / 100).collect()
}

fn with_pause(speech: &[f32], pause_ms: usize) -> Vec<f32> {
    let mut a = speech.to_vec();
    a.resize(a.len() + pause_ms * SR / 1000, 0.0);
    a
}

fn build(out: &Path, pause_ms: usize) -> Result<Vec<(Sample, Vec<f32>)>> {
    let mut set = Vec::new();
    let sample = |name: String, source: &str, complete: bool, pause_ms: Option<u32>| Sample { name, source: source.into(), complete, pause_ms };
    let mut files: Vec<PathBuf> = std::fs::read_dir(LIBRIVOX)
        .context(LIBRIVOX)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    files.sort();
    for f in &files {
        let a = wav16k(f)?;
        let tag = f.file_stem().unwrap().to_string_lossy().rsplit('-').next().unwrap_or_default().to_string();
        let speech = trim_end(&a);
        set.push((sample(format!("librivox-{tag}-end"), "librivox", true, None), with_pause(speech, pause_ms)));
        for (k, cut) in pauses_inside(speech, 2).into_iter().enumerate() {
            set.push((sample(format!("librivox-{tag}-pause{}", k + 1), "librivox", false, None), with_pause(&speech[..cut], pause_ms)));
        }
    }
    let jfk = wav16k(&fetch("jfk-sample")?.join("jfk.wav"))?;
    for (i, &(_, end)) in JFK_SPEECH.iter().enumerate() {
        let cut = (end * SR as f64) as usize;
        let last = i + 1 == JFK_SPEECH.len();
        let pause = JFK_SPEECH.get(i + 1).map(|&(next, _)| ((next - end) * 1000.0).round() as u32);
        // The recording's own pause follows (room noise), not digital silence.
        let upto = (cut + pause_ms * SR / 1000).min(jfk.len());
        set.push((sample(format!("jfk-{}", if last { "end".into() } else { format!("pause{}", i + 1) }), "jfk", last, pause), jfk[..upto].to_vec()));
    }
    let speaker = Speaker::load()?;
    for voice in ["af_heart", "am_adam"] {
        for (texts, complete) in [(&COMPLETE, true), (&INCOMPLETE, false)] {
            for (i, text) in texts.iter().enumerate() {
                let a = speaker.speak(text, voice, SR as u32)?;
                let kind = if complete { "complete" } else { "unfinished" };
                set.push((sample(format!("kokoro-{voice}-{kind}{:02}", i + 1), "kokoro", complete, None), with_pause(trim_end(&a), pause_ms)));
            }
        }
    }
    std::fs::create_dir_all(out.join("samples"))?;
    for (s, a) in &set {
        std::fs::write(out.join("samples").join(format!("{}.wav", s.name)), voice_runtime::audio::encode_wav(a, SR as u32, 1, false))?;
    }
    let labels: Vec<&Sample> = set.iter().map(|(s, _)| s).collect();
    std::fs::write(out.join("labels.json"), serde_json::to_vec_pretty(&labels)?)?;
    Ok(set)
}

/// The set written by an earlier [`build`].
fn read(out: &Path) -> Result<Vec<(Sample, Vec<f32>)>> {
    let labels: Vec<Sample> = serde_json::from_slice(&std::fs::read(out.join("labels.json"))?)?;
    labels.into_iter().map(|s| Ok((s.clone(), wav16k(&out.join("samples").join(format!("{}.wav", s.name)))?))).collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let set = if args.rebuild || !args.out.join("labels.json").is_file() { build(&args.out, args.pause_ms)? } else { read(&args.out)? };
    if args.build_only {
        println!("{} samples in {}", set.len(), args.out.display());
        return Ok(());
    }
    let model = SmartTurn::load_dir(&fetch("smart-turn-v3")?, &Device::Cpu)?;
    model.probability(&set[0].1)?; // warm-up: thread pools, first allocations
    let mut scored = Vec::new();
    for (s, a) in &set {
        let mut times = Vec::new();
        let mut p = 0.0;
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            p = model.probability(a)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        scored.push(Scored { sample: s.clone(), probability: p, decision_ms: times[times.len() / 2], transcript: None });
    }
    if args.transcribe {
        let whisper = voice_whisper::WhisperModel::load("whisper-tiny.en", &fetch("whisper-tiny.en")?, &Device::Cpu)?;
        let opts =
            voice_whisper::TranscribeOptions { language: Some("en".into()), window: voice_whisper::EncoderWindow::fit(), ..Default::default() };
        for (r, (_, a)) in scored.iter_mut().zip(&set) {
            r.transcript = Some(whisper.transcribe(a, &opts, &|| false)?.text);
        }
        let question = |r: &Scored| r.transcript.as_deref().is_some_and(|t| t.trim_end().ends_with('?'));
        for r in &scored {
            println!(
                "{:34} {:9} p {:5.3} {}  {:?}",
                r.sample.name,
                if r.sample.complete { "complete" } else { "paused" },
                r.probability,
                if question(r) { "?" } else { " " },
                r.transcript.as_deref().unwrap_or("")
            );
        }
        let count = |f: &dyn Fn(&Scored) -> bool| scored.iter().filter(|r| f(r)).count();
        let model = |r: &Scored| r.probability > voice_smart_turn::THRESHOLD;
        println!(
            "transcripts ending in '?': {} of {} complete, {} of {} paused; Smart Turn 'not finished' on a complete one with '?': {}; on a paused one with '?': {}",
            count(&|r| r.sample.complete && question(r)),
            count(&|r| r.sample.complete),
            count(&|r| !r.sample.complete && question(r)),
            count(&|r| !r.sample.complete),
            count(&|r| r.sample.complete && !model(r) && question(r)),
            count(&|r| !r.sample.complete && !model(r) && question(r)),
        );
    }
    println!("{:34} {:9} {:>6} {:>9} {:>8}", "sample", "label", "p", "decision", "ms");
    for r in &scored {
        let ok = (r.probability > voice_smart_turn::THRESHOLD) == r.sample.complete;
        println!(
            "{:34} {:9} {:6.3} {:>9} {:8.1}",
            r.sample.name,
            if r.sample.complete { "complete" } else { "paused" },
            r.probability,
            if ok { "right" } else { "WRONG" },
            r.decision_ms
        );
    }
    for source in ["librivox", "jfk", "kokoro", "all"] {
        let rows: Vec<&Scored> = scored.iter().filter(|r| source == "all" || r.sample.source == source).collect();
        let right = |f: &dyn Fn(&Scored) -> bool| rows.iter().filter(|r| f(r) == r.sample.complete).count();
        let model_right = right(&|r| r.probability > voice_smart_turn::THRESHOLD);
        let complete = rows.iter().filter(|r| r.sample.complete).count();
        let paused_kept = rows.iter().filter(|r| !r.sample.complete && r.probability <= voice_smart_turn::THRESHOLD).count();
        println!(
            "{source:9} {:3} samples ({complete} complete, {} paused): Smart Turn {model_right}/{} right ({:.0} %), waits through {paused_kept} of {} pauses; a fixed {} ms silence: {complete}/{} right ({:.0} %), waits through none",
            rows.len(),
            rows.len() - complete,
            rows.len(),
            100.0 * model_right as f64 / rows.len() as f64,
            rows.len() - complete,
            args.pause_ms,
            rows.len(),
            100.0 * complete as f64 / rows.len() as f64,
        );
    }
    let jfk_cut_500 = scored.iter().filter(|r| r.sample.pause_ms.is_some_and(|p| p >= 500)).count();
    let jfk_cut_model =
        scored.iter().filter(|r| r.sample.source == "jfk" && !r.sample.complete && r.probability > voice_smart_turn::THRESHOLD).count();
    println!(
        "JFK's sentence: the fixed 500 ms silence ends the turn at {jfk_cut_500} of its 4 pauses, Smart Turn after {} ms at {jfk_cut_model}",
        args.pause_ms
    );
    let mut ms: Vec<f64> = scored.iter().map(|r| r.decision_ms).collect();
    ms.sort_by(f64::total_cmp);
    println!("one decision (features + network, 8 s window): median {:.1} ms, p90 {:.1} ms", ms[ms.len() / 2], ms[ms.len() * 9 / 10]);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&scored)?)?;
    }
    Ok(())
}
