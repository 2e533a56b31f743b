//! LLM throughput: prompt (prefill) and decode tokens/s for one stream, and aggregate decode
//! tokens/s at several concurrent streams, through the same engine the service uses. The peer
//! (llama.cpp via llama-cpp-python, same GGUF, same threads) is run by `benches/llm_peer.py`;
//! `benches/run-llm-bench.sh` runs both and prints the ratios.

#[path = "common.rs"]
mod common;

use std::{sync::Arc, time::Instant};

use anyhow::Result;
use clap::Parser;
use serde::Serialize;
use voice_models::Fetcher;
use voice_textgen::{engine::Handle, Engine, EngineConfig, Event, GenerateRequest, LoadedModel, SamplingParams};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Prompt length in tokens for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated per stream.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    streams: Vec<usize>,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Out {
    model: String,
    threads: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
    aggregate: Vec<(usize, f64)>,
}

fn wait(mut h: Handle) -> Result<(usize, f64)> {
    let start = Instant::now();
    let mut first = None;
    loop {
        match h.events.blocking_recv() {
            Some(Event::Text(_)) => {
                first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            }
            Some(Event::Done { usage, .. }) => return Ok((usage.completion_tokens, first.unwrap_or(0.0))),
            Some(Event::Error(e)) => anyhow::bail!(e),
            None => anyhow::bail!("no result"),
        }
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = Fetcher::new(None).resolve(&a.model, true, &[])?.dir;
    let model = Arc::new(LoadedModel::load(&a.model, &dir, &candle_core::Device::Cpu, 4096)?);
    let max_streams = a.streams.iter().copied().max().unwrap_or(1);
    // No prefix cache: every run must prefill the whole prompt (it repeats).
    let engine =
        Engine::start(model.clone(), EngineConfig { max_batch: max_streams, max_queue: 64, prefill_chunk: 4096, prefix_cache_bytes: 0 }, None);
    // A prompt of exactly `prompt_tokens` tokens: repeat a sentence and cut.
    let mut prompt = model.tokenizer.encode("The quick brown fox jumps over the lazy dog while the band plays on. ".repeat(64).as_str())?;
    prompt.truncate(a.prompt_tokens);
    // Unstoppable generation of exactly gen_tokens: no stop tokens can end it early because we
    // count on max_tokens; greedy.
    let params = SamplingParams { max_tokens: a.gen_tokens, ..Default::default() };

    let (mut prefill, mut decode, mut ttft) = (vec![], vec![], vec![]);
    for _ in 0..a.runs {
        // Prefill: time to first token for the prompt, one stream.
        let t = Instant::now();
        let h = engine.submit(GenerateRequest { prompt_tokens: prompt.clone(), params: SamplingParams { max_tokens: 1, ..params.clone() } })?;
        wait(h)?;
        let pf = t.elapsed().as_secs_f64();
        prefill.push(a.prompt_tokens as f64 / pf);
        ttft.push(pf * 1e3);
        // Decode: a short prompt, then gen_tokens; subtract the first token's time.
        let h = engine.submit(GenerateRequest { prompt_tokens: prompt[..8].to_vec(), params: params.clone() })?;
        let t = Instant::now();
        let (n, first) = wait(h)?;
        let total = t.elapsed().as_secs_f64();
        decode.push((n.saturating_sub(1)) as f64 / (total - first).max(1e-9));
    }
    let mut aggregate = vec![];
    for &s in &a.streams {
        let t = Instant::now();
        let handles: Vec<Handle> = (0..s)
            .map(|i| {
                let mut p = prompt[..16].to_vec();
                p[0] = p[0].wrapping_add(i as u32 % 7);
                engine.submit(GenerateRequest { prompt_tokens: p, params: params.clone() }).unwrap()
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += wait(h)?.0;
        }
        aggregate.push((s, total as f64 / t.elapsed().as_secs_f64()));
    }
    let out = Out {
        model: a.model.clone(),
        threads: candle_core::utils::get_num_threads(),
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        prefill_tok_s: common::median(&prefill),
        decode_tok_s: common::median(&decode),
        ttft_ms: common::median(&ttft),
        aggregate,
    };
    println!(
        "ours {}: prompt {:.0} tok/s ({} tokens, first token {:.0} ms), decode {:.0} tok/s; aggregate decode {}",
        out.model,
        out.prefill_tok_s,
        out.prompt_tokens,
        out.ttft_ms,
        out.decode_tok_s,
        out.aggregate.iter().map(|(s, t)| format!("{s} streams {t:.0} tok/s")).collect::<Vec<_>>().join(", ")
    );
    if let Some(p) = a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
