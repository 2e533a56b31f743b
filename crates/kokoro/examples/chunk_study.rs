//! Measure streaming inside a piece: for the golden cases, chunked synthesis vs the whole pass
//! (log-mel distance, largest sample difference, step at the joins) and time to the first chunk,
//! for several chunk sizes and margins, and the gaps a real-time listener would hear. Used to
//! choose voice-tts's defaults. Without configurations: how much the one-pass rendering itself
//! moves when the generator sees only part of the piece.
//!
//!     cargo run --release -p voice-kokoro --example chunk_study -- ~/.cache/voice-ai/models/kokoro-82m 16,128,10 8,64,10
//!     (first chunk frames, largest chunk frames, margin half-frames)
use std::time::Instant;

use candle_core::Device;
use voice_kokoro::{eval::log_mel_distance_db, voices::Voices, Chunking, Kokoro, Weights};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("model dir"));
    let weights = Weights::from_onnx(&dir.join("model.onnx"), &Device::Cpu)?;
    let model = Kokoro::new(&weights, &Device::Cpu)?;
    let reference = Kokoro::with_precision(&weights, &Device::Cpu, voice_kokoro::Precision::F32)?;
    println!("generator arithmetic: {:?}", model.precision());
    let voices = Voices::load_dir(&dir.join("voices"))?;
    let golden: serde_json::Value = serde_json::from_slice(&std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.json"))?)?;
    let configs: Vec<(usize, usize, usize)> = std::env::args()
        .skip(2)
        .map(|a| {
            let v: Vec<usize> = a.split(',').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    for case in golden["cases"].as_array().unwrap() {
        let ids: Vec<i64> = case["tokens"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let pack = voices.resolve(case["voice"].as_str().unwrap()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let style = pack.style(ids.len() - 2);
        let speed = case["speed"].as_f64().unwrap() as f32;
        let t = Instant::now();
        let p = model.prepare(&ids, style, speed, None)?;
        let prep_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let whole = model.generate(&p)?;
        let whole_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{}: {} frames (lead {}), prepare {:.0} ms (prosody {:.0}, decoder {:.0}), generator whole {:.0} ms",
            case["name"],
            p.frames(),
            p.durations[0],
            prep_ms,
            p.stage_ms[0],
            p.stage_ms[1],
            whole_ms
        );
        if model.precision() != reference.precision() {
            let t = Instant::now();
            let rp = reference.prepare(&ids, style, speed, Some(&p.durations))?;
            let f32_audio = reference.generate(&rp)?;
            println!("  f32 prepare {:.0} ms", rp.stage_ms[0] + rp.stage_ms[1]);
            println!(
                "  f32 generator {:.0} ms; int8 vs f32: log-mel {:.2} dB",
                t.elapsed().as_secs_f64() * 1e3,
                log_mel_distance_db(&whole, &f32_audio, 24_000)
            );
        }
        if configs.is_empty() {
            spans_study(&model, &p, &whole)?;
        }
        for &(first, max, margin) in &configs {
            let c = Chunking { first_frames: first, max_frames: max, margin };
            let mut out = Vec::new();
            let mut joins = Vec::new();
            let mut first_ms = None;
            // Playback from the first chunk on, in real time, leading silence skipped (as the
            // agent does): how long the listener waits for audio after the first chunk.
            let (mut play_end, mut gap_ms) = (0f64, 0f64);
            let lead_ms = p.durations[0] as f64 * 25.0;
            let t = Instant::now();
            model.synthesize_chunks(&p, &c, |chunk| {
                let now = t.elapsed().as_secs_f64() * 1e3;
                let dur = chunk.len() as f64 / 24.0;
                if first_ms.is_none() {
                    first_ms = Some(now);
                    play_end = now + dur - lead_ms;
                } else {
                    gap_ms += (now - play_end).max(0.0);
                    play_end = play_end.max(now) + dur;
                }
                if !out.is_empty() {
                    joins.push(out.len());
                }
                out.extend(chunk);
                true
            })?;
            let total_ms = t.elapsed().as_secs_f64() * 1e3;
            if std::env::var("JOINS").is_ok() {
                for &j in &joins {
                    println!("    join {j}: out {:?} whole {:?}", &out[j - 3..j + 3], &whole[j - 3..j + 3]);
                }
            }
            assert_eq!(out.len(), whole.len());
            let d = log_mel_distance_db(&out, &whole, 24_000);
            let peak = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
            let maxdiff = out.iter().zip(&whole).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Step of the error signal at each join, relative to the peak.
            let step = joins.iter().map(|&j| ((out[j] - whole[j]) - (out[j - 1] - whole[j - 1])).abs()).fold(0f32, f32::max);
            println!(
                "  first {first:>2} max {max:>3} margin {margin:>2}: {} chunks, first chunk {:.0} ms, gaps {:.0} ms, all {:.0} ms, log-mel {d:.2} dB, max diff {:.3} of peak, join step {:.4} of peak",
                joins.len() + 1,
                first_ms.unwrap_or(0.0),
                gap_ms,
                total_ms,
                maxdiff / peak,
                step / peak
            );
        }
    }
    Ok(())
}

/// The one-pass rendering vs the generator over part of the piece, compared away from the cut
/// edges (20 half-frames): the cost of instance norms that see less than the piece.
pub fn spans_study(model: &Kokoro, p: &voice_kokoro::Prepared, whole: &[f32]) -> anyhow::Result<()> {
    let h = 2 * p.frames();
    for (lo, hi) in [(0, h - 20), (0, h / 2), (0, h / 4), (20, h), (h / 2, h), (h / 4, h / 2)] {
        let a = model.generate_span(p, lo..hi)?;
        // Compare the inner part, 20 half-frames from each cut edge.
        let s0 = if lo == 0 { 0 } else { (lo + 20) * 300 };
        let s1 = if hi == h { hi * 300 } else { (hi - 20) * 300 };
        let ours = &a[s0 - lo * 300..s1 - lo * 300];
        let want = &whole[s0..s1];
        let d = log_mel_distance_db(ours, want, 24_000);
        let peak = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let maxdiff = ours.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("  span {lo}..{hi} of {h}: inner log-mel {d:.2} dB, max diff {:.3}", maxdiff / peak);
    }
    Ok(())
}
