//! Text-to-speech speed: voice-kokoro + voice-g2p in process (release build), on a 6-word
//! first reply piece (what the agent sends first) and 10-, 25- and 50-word inputs, cut into
//! sentence pieces and streamed in chunks as voice-tts does. Per input: time to first audio
//! (text front end + the first piece's prepare + its first chunk), the same with each piece in
//! one pass (no streaming inside a piece), total time, real-time factor (total / audio
//! duration), and the gaps a real-time listener would hear after the first audio (leading
//! silence skipped, as the agent does). Writes the plan (each piece's token ids and the voice) for the peer,
//! benches/tts_peer.py (onnxruntime on the same int8 ONNX), so both synthesize identical tokens.
//!
//!     tts-bench --model-dir ~/.cache/voice-ai/models/kokoro-82m --runs 3 --plan plan.json --json ours.json

#[path = "common.rs"]
mod common;
use common::{median, rss_mb};

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use serde::Serialize;
use voice_g2p::{G2p, Variant};
use voice_kokoro::{voices::Voices, Chunking, Kokoro, Weights, SAMPLE_RATE};

/// The inputs: the agent's typical first piece, and 10, 25 and 50 words of ordinary assistant
/// speech.
pub const TEXTS: [&str; 4] = [
    "Sure, I can help with that.",
    "Sure, I can help you with that right now, friend.",
    "The weather today will be mostly sunny with a light breeze. Expect temperatures around seventy degrees, so a light jacket should be enough this evening.",
    "Thanks for waiting. I looked through your calendar and found two free slots next week. Tuesday afternoon works best, because the morning is already full. \
     Should I book the meeting room for an hour, and send the invitation to everyone on the project team? I can also add an agenda.",
];

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model_dir: PathBuf,
    #[arg(long, default_value = "af_heart")]
    voice: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to write the pieces (token ids) for the peer.
    #[arg(long)]
    plan: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Streaming inside a piece, as voice-tts's flags of the same names (0: whole pieces).
    #[arg(long, default_value_t = Chunking::STREAM.first_frames)]
    first_chunk_frames: usize,
    #[arg(long, default_value_t = Chunking::STREAM.max_frames)]
    max_chunk_frames: usize,
}

#[derive(Serialize)]
struct PlanText {
    words: usize,
    text: String,
    voice: String,
    pieces: Vec<Vec<i64>>,
}

#[derive(Serialize)]
struct Row {
    words: usize,
    pieces: usize,
    audio_secs: f64,
    g2p_ms: f64,
    ttfa_ms: f64,
    /// First audio with the first piece synthesized in one pass.
    ttfa_whole_ms: f64,
    /// Waits for audio a real-time listener hears after the first audio.
    gap_ms: f64,
    total_ms: f64,
    rtf: f64,
    ttfa_ms_runs: Vec<f64>,
    rtf_runs: Vec<f64>,
    rss_mb_peak: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = Device::Cpu;
    let model = Kokoro::new(&Weights::from_onnx(&args.model_dir.join("model.onnx"), &dev)?, &dev)?;
    let voices = Voices::load_dir(&args.model_dir.join("voices"))?;
    let pack = voices.resolve(&args.voice).map_err(|e| anyhow::anyhow!("{e}"))?;
    let g2p = G2p::load(&args.model_dir, if args.voice.starts_with('b') { Variant::Gb } else { Variant::Us })?;
    // Warm-up: first calls allocate and start thread pools.
    model.forward(&[0, 50, 83, 54, 156, 0], pack.style(4), 1.0)?;

    let chunking = Chunking { first_frames: args.first_chunk_frames, max_frames: args.max_chunk_frames, ..Chunking::STREAM };
    let mut plan = Vec::new();
    let mut rows = Vec::new();
    for text in TEXTS {
        let words = text.split_whitespace().count();
        let (mut ttfa, mut rtf, mut totals, mut g2ps, mut whole_ttfa, mut gaps) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut audio_secs = 0.0;
        let mut n_pieces = 0;
        for _ in 0..args.runs.max(1) {
            let start = Instant::now();
            let pieces: Vec<Vec<i64>> =
                g2p.pieces(text, voice_kokoro::CONTEXT_LENGTH - 2, 8)?.iter().map(|c| g2p.vocab().encode_padded(&c.phonemes)).collect();
            let g2p_ms = start.elapsed().as_secs_f64() * 1e3;
            let mut samples = 0usize;
            let mut first = None;
            let (mut play_end, mut gap) = (0f64, 0f64);
            for ids in &pieces {
                let p = model.prepare(ids, pack.style(ids.len() - 2), 1.0, None)?;
                let lead_ms = if first.is_none() { p.durations[0] as f64 * 25.0 } else { 0.0 };
                model.synthesize_chunks(&p, &chunking, |chunk| {
                    let now = start.elapsed().as_secs_f64() * 1e3;
                    let dur = chunk.len() as f64 / (SAMPLE_RATE as f64 / 1e3);
                    samples += chunk.len();
                    if first.is_none() {
                        first = Some(now);
                        play_end = now + dur - lead_ms;
                    } else {
                        gap += (now - play_end).max(0.0);
                        play_end = play_end.max(now) + dur;
                    }
                    true
                })?;
            }
            let total = start.elapsed().as_secs_f64() * 1e3;
            // The first piece again in one pass: the first audio without streaming inside it.
            let t = Instant::now();
            model.forward(&pieces[0], pack.style(pieces[0].len() - 2), 1.0)?;
            whole_ttfa.push(g2p_ms + t.elapsed().as_secs_f64() * 1e3);
            audio_secs = samples as f64 / SAMPLE_RATE as f64;
            ttfa.push(first.unwrap_or(total));
            gaps.push(gap);
            rtf.push(total / 1e3 / audio_secs);
            totals.push(total);
            g2ps.push(g2p_ms);
            n_pieces = pieces.len();
            if plan.len() < rows.len() + 1 {
                plan.push(PlanText { words, text: text.to_string(), voice: args.voice.clone(), pieces });
            }
        }
        let row = Row {
            words,
            pieces: n_pieces,
            audio_secs,
            g2p_ms: median(&g2ps),
            ttfa_ms: median(&ttfa),
            ttfa_whole_ms: median(&whole_ttfa),
            gap_ms: median(&gaps),
            total_ms: median(&totals),
            rtf: median(&rtf),
            ttfa_ms_runs: ttfa,
            rtf_runs: rtf,
            rss_mb_peak: rss_mb("VmHWM:"),
        };
        println!(
            "ours  {:>2} words, {} pieces, {:.1} s audio: first audio {:.0} ms streamed, {:.0} ms whole (front end {:.0} ms), gaps {:.0} ms, total {:.0} ms, RTF {:.3}",
            row.words, row.pieces, row.audio_secs, row.ttfa_ms, row.ttfa_whole_ms, row.g2p_ms, row.gap_ms, row.total_ms, row.rtf
        );
        rows.push(row);
    }
    if let Some(p) = &args.plan {
        std::fs::write(p, serde_json::to_vec_pretty(&plan)?)?;
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&rows)?)?;
    }
    Ok(())
}
