//! Voice-to-voice latency of the agent's loop with the real services: voice-stt, voice-llm and
//! voice-tts started here (release binaries beside this one, or `--*-url` for running ones), the
//! conversation loop in process with the in-memory room (a live microphone at real time, the
//! playout clock of LiveKit's audio source), Silero VAD on the CPU. Each turn a spoken question
//! (Kokoro voices, synthesized once up front) goes in; the turn's report (the stages that add up
//! to voice-to-voice) comes out. Prints p50 / p90 per stage over `--turns` turns.
//!
//!     agent-bench --turns 20 --json agent.json

#[path = "common.rs"]
mod common;
use common::{agent_question_voice, AGENT_QUESTIONS};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use voice_agent::{
    backends::{BackendUrls, Backends, ReplySettings},
    conversation::{AgentConfig, Conversation, Shared, Status, TOPIC_METRICS, TOPIC_TRANSCRIPT},
    end_of_turn::{EndOfTurnModel, SmartTurnModel},
    metrics::AgentMetrics,
    transport::InMemoryTransport,
    turn::{TurnConfig, MAX_END_SILENCE},
    vad::Silero,
};
use voice_testkit::Service;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    turns: usize,
    #[arg(long, default_value = "whisper-tiny.en")]
    stt_model: String,
    #[arg(long, default_value = "smollm2-135m-instruct")]
    llm_model: String,
    /// Device for the services (cpu, cuda, auto).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Use running services instead of starting them (gRPC URLs; HTTP of voice-tts for the questions).
    #[arg(long)]
    stt_url: Option<String>,
    #[arg(long)]
    llm_url: Option<String>,
    #[arg(long)]
    tts_url: Option<String>,
    #[arg(long)]
    tts_http: Option<String>,
    /// `smart-turn` (as voice-agent starts by default: the model asked at the final candidate's
    /// silence, "finished" ending the turn at --end-silence-ms, 200 by default then) or `none`
    /// (a fixed --end-silence-ms, 500 by default then).
    #[arg(long, default_value = "smart-turn")]
    turn_detector: String,
    /// Silence before a turn may end (default: 200 with smart-turn, 500 without).
    #[arg(long)]
    end_silence_ms: Option<u64>,
    /// Partial transcripts every N ms while the user speaks (0: none).
    #[arg(long, default_value_t = 1000)]
    partial_interval_ms: u32,
    /// Silence after which the final transcript starts (the agent's --final-candidate-silence;
    /// 0: only at the end of the turn).
    #[arg(long, default_value_t = 96)]
    final_candidate_ms: u64,
    /// Two real recordings (JFK, a LibriVox sentence) join the ten Kokoro questions as
    /// statements. Off by default: a turn ended inside a sentence (Smart Turn ends JFK's at
    /// its first pause) is not yet accounted for per turn (benches/README.md).
    #[arg(long)]
    with_recordings: bool,
    /// voice-stt's --stream-window: `fit` (utterance-sized encoder window) or `full` (30 s).
    #[arg(long, default_value = "fit")]
    stt_window: String,
    /// voice-llm's --prefix-cache-mb (0: every turn prefills the whole prompt).
    #[arg(long, default_value_t = 256)]
    prefix_cache_mb: u64,
    /// voice-llm's --cpu-nice (10: as scripts/run-stack.sh starts it).
    #[arg(long, default_value_t = 10)]
    llm_nice: i32,
    /// voice-tts's --first-chunk-frames (0: each piece in one pass) and --max-chunk-frames.
    #[arg(long, default_value_t = voice_kokoro::Chunking::STREAM.first_frames)]
    tts_first_chunk_frames: usize,
    #[arg(long, default_value_t = voice_kokoro::Chunking::STREAM.max_frames)]
    tts_max_chunk_frames: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn start(name: &str, prefix: &'static str, args: &[&str]) -> voice_testkit::Server {
    let bin = std::env::current_exe().unwrap().with_file_name(name);
    assert!(bin.is_file(), "{} missing: cargo build --release -p {name}", bin.display());
    let bin: &'static str = Box::leak(bin.to_string_lossy().into_owned().into_boxed_str());
    Service::new(bin, prefix).start(args, &[])
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dev = a.device.clone();
    // Services: started one at a time (loads do not fight), kept alive until the end.
    let given = [
        (a.stt_url.clone(), "voice-stt", "VOICE_STT", Some(a.stt_model.clone())),
        (a.llm_url.clone(), "voice-llm", "VOICE_LLM", Some(a.llm_model.clone())),
        (a.tts_url.clone(), "voice-tts", "VOICE_TTS", None),
    ];
    // On this thread: a child's parent-death signal fires when the thread that spawned it ends.
    let (urls, servers) = {
        let (mut urls, mut servers) = (Vec::new(), Vec::new());
        for (url, name, prefix, model) in given {
            if let Some(u) = url {
                urls.push((u, String::new()));
                continue;
            }
            let mut args = vec!["--device".to_string(), dev.clone(), "--log-format".into(), "json".into()];
            if let Some(m) = model {
                args.extend(["--model".to_string(), m]);
            }
            if name == "voice-stt" {
                args.extend(["--stream-window".to_string(), a.stt_window.clone()]);
            }
            if name == "voice-llm" {
                args.extend(["--prefix-cache-mb".to_string(), a.prefix_cache_mb.to_string(), "--cpu-nice".into(), a.llm_nice.to_string()]);
            }
            if name == "voice-tts" {
                args.extend([
                    "--first-chunk-frames".to_string(),
                    a.tts_first_chunk_frames.to_string(),
                    "--max-chunk-frames".into(),
                    a.tts_max_chunk_frames.to_string(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let s = start(name, prefix, &args);
            urls.push((s.grpc.clone(), s.http.clone()));
            servers.push(s);
        }
        (urls, servers)
    };
    let (stt, llm, tts) = (urls[0].0.clone(), urls[1].0.clone(), urls[2].0.clone());
    let tts_http = a.tts_http.clone().unwrap_or_else(|| urls[2].1.clone());
    let stt_http = urls[0].1.clone();
    let result =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(&a, stt, llm, tts, tts_http, stt_http));
    drop(servers);
    result
}

async fn run(a: &Args, stt: String, llm: String, tts: String, tts_http: String, stt_http: String) -> Result<()> {
    // The questions, spoken once, then (--with-recordings) real speech: (audio, what was said).
    let client = reqwest::Client::new();
    let mut speech = Vec::new();
    let mut said: Vec<String> = AGENT_QUESTIONS.iter().map(|q| q.to_string()).collect();
    for (i, q) in AGENT_QUESTIONS.iter().enumerate() {
        let voice = agent_question_voice(i);
        let r =
            client.post(format!("{tts_http}/v1/audio/speech")).json(&json!({"input": q, "voice": voice, "response_format": "pcm"})).send().await?;
        if !r.status().is_success() {
            bail!("voice-tts: {}", r.text().await?);
        }
        let pcm = voice_runtime::audio::s16le_to_f32(&r.bytes().await?);
        let pcm16 = voice_runtime::audio::resample(&pcm, 24_000, 16_000)?;
        speech.push(pcm16.iter().map(|&v| (v * 32767.0).clamp(-32768.0, 32767.0) as i16).collect::<Vec<i16>>());
    }
    if a.with_recordings {
        let jfk = voice_models::Fetcher::new(None).resolve("jfk-sample", true, &[]).context("jfk-sample")?.dir.join("jfk.wav");
        let librivox = voice_whisper::eval::standard_set(&jfk)?.into_iter().find(|u| u.name.ends_with("0920")).context("LibriVox 0920")?;
        for (wav, text) in [(jfk, voice_whisper::eval::JFK_REFERENCE.to_string()), (librivox.wav, librivox.reference)] {
            let pcm = voice_runtime::audio::decode_to_rate(&std::fs::read(&wav)?, 16_000, 60.0)?.samples;
            speech.push(pcm.iter().map(|&v| voice_runtime::audio::f32_to_s16(v)).collect::<Vec<i16>>());
            said.push(text);
        }
    }

    let settings = ReplySettings {
        llm_model: String::new(),
        max_tokens: 60,
        temperature: 0.0,
        seed: Some(0),
        voice: "af_heart".into(),
        speed: 1.0,
        stt_model: String::new(),
        language: "en".into(),
        partial_interval_ms: a.partial_interval_ms,
        collection: String::new(),
        context_tokens: 200,
        call_timeout: Duration::from_secs(30),
        retries: 2,
    };
    let backends = Backends::new(&BackendUrls { stt, llm, embed: "http://127.0.0.1:1".into(), tts }, None, settings)?;
    let vad_dir = voice_models::Fetcher::new(None).resolve("silero-vad", true, &[]).context("silero-vad")?.dir;
    let vad = Silero::load(&vad_dir.join(voice_vad::SAFETENSORS_FILE))?;
    let metrics = AgentMetrics::new(&voice_runtime::Metrics::new("agent_bench")?)?;
    let end_of_turn: Option<Arc<dyn EndOfTurnModel>> = match a.turn_detector.as_str() {
        "smart-turn" => {
            let dir = voice_models::Fetcher::new(None).resolve("smart-turn-v3", true, &[]).context("smart-turn-v3")?.dir;
            Some(Arc::new(SmartTurnModel::load(&dir)?))
        }
        "none" => None,
        other => bail!("--turn-detector {other}: expected smart-turn or none"),
    };
    let end_silence = a.end_silence_ms.map(Duration::from_millis);
    let turn = TurnConfig { candidate_silence: Duration::from_millis(a.final_candidate_ms), ..TurnConfig::default() };
    let turn = match &end_of_turn {
        Some(_) => turn.with_end_of_turn_model(end_silence, MAX_END_SILENCE),
        None => TurnConfig { end_silence: end_silence.unwrap_or(turn.end_silence), ..turn },
    };
    let config = AgentConfig { turn, ..AgentConfig::default() };
    let gaps = metrics.playout_gap.clone();
    let shared = Shared { backends, vad: Arc::new(vad), end_of_turn, metrics, config: Arc::new(config) };
    let (room, events) = InMemoryTransport::new(100);
    let conversation = Conversation::new(shared, Arc::new(room.clone()), Status::new("bench"));
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conversation.run(events, cancel.clone()));
    let mic = room.microphone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut reports: Vec<Value> = Vec::new();
    for turn in 0..a.turns {
        let seen = room.data().len();
        mic.say(&speech[turn % speech.len()]).await;
        let t0 = Instant::now();
        // The turn is over when its final agent transcript arrived and the state is back to listening.
        let report = loop {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("turn {turn}: no answer within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let data = room.data();
            let new: Vec<(String, Value)> =
                data[seen..].iter().map(|m| (m.topic.clone(), serde_json::from_slice(&m.payload).unwrap_or(Value::Null))).collect();
            let done = new.iter().any(|(t, v)| t == TOPIC_TRANSCRIPT && v["role"] == "agent" && v["final"] == true);
            if let Some((_, m)) = new.iter().find(|(t, _)| t == TOPIC_METRICS) {
                if done {
                    let user = new
                        .iter()
                        .filter(|(t, v)| t == TOPIC_TRANSCRIPT && v["role"] == "user" && v["final"] == true)
                        .map(|(_, v)| v["text"].as_str().unwrap_or("").to_string())
                        .next()
                        .unwrap_or_default();
                    let agent = new
                        .iter()
                        .filter(|(t, v)| t == TOPIC_TRANSCRIPT && v["role"] == "agent" && v["final"] == true)
                        .map(|(_, v)| v["text"].as_str().unwrap_or("").to_string())
                        .next()
                        .unwrap_or_default();
                    let mut m = m.clone();
                    let (errors, words) = voice_whisper::eval::word_errors(&said[turn % said.len()], &user);
                    m["user_word_errors"] = json!(errors);
                    m["user_words"] = json!(words);
                    m["user"] = json!(user);
                    m["agent"] = json!(agent);
                    break m;
                }
            }
        };
        eprintln!(
            "turn {:>2}: voice-to-voice {:>7.1} ms  llm ttft {:>7.1} ms  prompt {:>4} tokens ({:>4} cached)  | {} -> {}",
            turn + 1,
            report["voice_to_voice_ms"].as_f64().unwrap_or(0.0),
            report["llm_ttft_ms"].as_f64().unwrap_or(0.0),
            report["llm_prompt_tokens"],
            report["llm_cached_tokens"],
            report["user"],
            report["agent"]
        );
        reports.push(report);
        // Let the answer finish playing and the agent go back to listening.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    cancel.cancel();
    let _ = task.await;

    let stages =
        ["end_of_utterance_ms", "stt_final_ms", "rag_ms", "llm_ttft_ms", "first_sentence_ms", "tts_ttfa_ms", "publish_ms", "voice_to_voice_ms"];
    let mut summary = serde_json::Map::new();
    println!("{:<22} {:>9} {:>9}", "stage (ms)", "p50", "p90");
    for s in stages {
        let v: Vec<f64> = reports.iter().filter_map(|r| r[s].as_f64()).collect();
        let (p50, p90) = (percentile(&v, 0.5), percentile(&v, 0.9));
        println!("{s:<22} {p50:>9.1} {p90:>9.1}");
        summary.insert(s.into(), json!({"p50": p50, "p90": p90}));
    }
    let sum = |k: &str| reports.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let (errors, words) = (sum("user_word_errors"), sum("user_words"));
    println!(
        "WER of the final transcripts against the questions asked: {:.2} % ({errors}/{words} words)",
        100.0 * errors as f64 / words.max(1) as f64
    );
    summary.insert("stt_final_wer".into(), json!({"errors": errors, "words": words}));
    let (prompt, cached) = (sum("llm_prompt_tokens"), sum("llm_cached_tokens"));
    println!("LLM prompt tokens: {prompt}, {cached} from the prefix cache ({:.0} %)", 100.0 * cached as f64 / prompt.max(1) as f64);
    println!(
        "playout gaps (the reply's next audio not ready when the previous ran out): {} gaps, {:.0} ms in all",
        gaps.get_sample_count(),
        gaps.get_sample_sum() * 1e3
    );
    summary.insert("playout_gaps".into(), json!({"count": gaps.get_sample_count(), "total_ms": gaps.get_sample_sum() * 1e3}));
    if !stt_http.is_empty() {
        // Which encoder window voice-stt's transcriptions (partials and finals) ran on.
        let (fitted, full) = tokio::task::spawn_blocking(move || {
            let count = |name| voice_testkit::metric(&stt_http, name, "");
            (count("voice_stt_encoder_windows_fitted_total"), count("voice_stt_encoder_windows_full_total"))
        })
        .await?;
        println!("voice-stt transcriptions (partials and finals): {fitted} on a fitted encoder window, {full} on the 30 s window");
        summary.insert("stt_windows".into(), json!({"fitted": fitted, "full": full}));
    }
    println!("turns: {}, agent peak RSS {:.0} MB (this process: VAD, loop, clients)", reports.len(), common::rss_mb("VmHWM:"));
    if let Some(p) = &a.json {
        std::fs::write(
            p,
            serde_json::to_string_pretty(
                &json!({"summary": summary, "turns": reports, "device": a.device, "stt_model": a.stt_model, "llm_model": a.llm_model}),
            )?,
        )?;
    }
    Ok(())
}
