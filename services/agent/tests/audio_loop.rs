//! The audio loop through the in-memory transport, with every model real: voice-stt (Whisper
//! tiny.en), voice-llm (SmolLM2-135M), voice-tts (Kokoro-82M) as started binaries, Silero VAD in
//! process. The user is scripted: questions spoken by Kokoro and JFK's inaugural sentence (a real
//! recording), fed at real time in 20 ms frames; what the agent says is what the in-memory room
//! played, transcribed again by voice-stt.
//!
//! Held: a question gets a spoken answer that contains the answer (the per-turn stages are in
//! order and their voice-to-voice agrees with one measured outside the agent); talking over the agent flushes its audio within one 10 ms frame of the decision and the
//! next question is answered; a backchannel ("yeah, okay") pauses it and it resumes. With the
//! semantic end of turn (Smart Turn), a sentence with a 400 ms pause inside is answered once,
//! after its end, and a finished question's end-of-utterance stage stays under 300 ms.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use voice_agent::{
    backends::{BackendUrls, Backends, ReplySettings},
    conversation::{AgentConfig, Conversation, Shared, Status, TOPIC_METRICS, TOPIC_STATE, TOPIC_TRANSCRIPT},
    end_of_turn::{EndOfTurnModel, SmartTurnModel},
    metrics::AgentMetrics,
    transport::{InMemoryTransport, PlayedFrame, OUTPUT_RATE},
    turn::{TurnDetector, TurnEvent, MAX_END_SILENCE},
    vad::{Silero, Vad},
};
use voice_testkit::{client, Service, SharedServer};

static STT: std::sync::OnceLock<&'static SharedServer> = std::sync::OnceLock::new();
static LLM: std::sync::OnceLock<&'static SharedServer> = std::sync::OnceLock::new();
static TTS: std::sync::OnceLock<&'static SharedServer> = std::sync::OnceLock::new();

/// A sibling binary of the workspace (built by `cargo build --workspace`, scripts/test.sh).
fn sibling(name: &str, prefix: &'static str, args: &'static [&'static str]) -> &'static SharedServer {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_voice-agent")).with_file_name(name);
    assert!(bin.is_file(), "{} is missing: build the workspace first (cargo build --workspace)", bin.display());
    let bin: &'static str = Box::leak(bin.to_string_lossy().into_owned().into_boxed_str());
    let svc: &'static Service = Box::leak(Box::new(Service::new(bin, prefix)));
    svc.shared(args)
}

fn services() -> (&'static SharedServer, &'static SharedServer, &'static SharedServer) {
    // Started one after the other: three model loads at once would only slow each other down.
    let stt = *STT.get_or_init(|| sibling("voice-stt", "VOICE_STT", &["--model", "whisper-tiny.en"]));
    let llm = *LLM.get_or_init(|| sibling("voice-llm", "VOICE_LLM", &["--model", "smollm2-135m-instruct"]));
    let tts = *TTS.get_or_init(|| sibling("voice-tts", "VOICE_TTS", &[]));
    (stt, llm, tts)
}

fn models_dir() -> std::path::PathBuf {
    voice_models::Fetcher::new(None).resolve("silero-vad", false, &[]).expect("silero-vad in the model cache (voice-models fetch silero-vad)").dir
}

/// 16 kHz mono speech of `text` from voice-tts (24 kHz PCM, resampled).
fn speak(tts: &SharedServer, text: &str, voice: &str) -> Vec<i16> {
    let r = client()
        .post(format!("{}/v1/audio/speech", tts.http))
        .json(&json!({"input": text, "voice": voice, "response_format": "pcm"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pcm = voice_runtime::audio::s16le_to_f32(&r.bytes().unwrap());
    to_i16(&voice_runtime::audio::resample(&pcm, 24_000, 16_000).unwrap())
}

/// The blocking HTTP client (and its runtime) off the async worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn to_i16(x: &[f32]) -> Vec<i16> {
    x.iter().map(|&v| (v * 32767.0).clamp(-32768.0, 32767.0) as i16).collect()
}

fn jfk() -> Vec<i16> {
    let dir = voice_models::Fetcher::new(None).resolve("jfk-sample", false, &[]).expect("jfk-sample in the model cache").dir;
    let bytes = std::fs::read(dir.join("jfk.wav")).unwrap();
    to_i16(&voice_runtime::audio::decode_to_rate(&bytes, 16_000, 60.0).unwrap().samples)
}

/// What the user heard, transcribed by voice-stt.
fn transcribe(stt: &SharedServer, frames: &[PlayedFrame]) -> String {
    let samples: Vec<f32> = frames.iter().flat_map(|f| f.samples.iter().map(|&s| s as f32 / 32768.0)).collect();
    let wav = voice_runtime::audio::encode_wav(&samples, OUTPUT_RATE, 1, false);
    let form = reqwest::blocking::multipart::Form::new()
        .text("model", "whisper-1")
        .part("file", reqwest::blocking::multipart::Part::bytes(wav).file_name("heard.wav"));
    let r = client().post(format!("{}/v1/audio/transcriptions", stt.http)).multipart(form).send().unwrap();
    let v: Value = r.json().unwrap();
    v["text"].as_str().unwrap_or_default().to_lowercase()
}

struct Harness {
    room: InMemoryTransport,
    stt: &'static SharedServer,
    tts: &'static SharedServer,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    cancel: tokio_util::sync::CancellationToken,
    metrics: AgentMetrics,
}

/// One conversation at a time: they share the three services and two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(config: AgentConfig) -> Harness {
    start_with(config, None, 1000).await
}

async fn start_with(config: AgentConfig, end_of_turn: Option<Arc<dyn EndOfTurnModel>>, partial_interval_ms: u32) -> Harness {
    let (stt, llm, tts) = tokio::task::spawn_blocking(services).await.unwrap();
    let settings = ReplySettings {
        llm_model: String::new(),
        max_tokens: 60,
        temperature: 0.0,
        seed: Some(0),
        voice: "af_heart".into(),
        speed: 1.0,
        stt_model: String::new(),
        language: "en".into(),
        partial_interval_ms,
        collection: String::new(),
        context_tokens: 200,
        call_timeout: Duration::from_secs(30),
        retries: 2,
    };
    let urls = BackendUrls { stt: stt.grpc.clone(), llm: llm.grpc.clone(), embed: "http://127.0.0.1:1".into(), tts: tts.grpc.clone() };
    let backends = Backends::new(&urls, None, settings).unwrap();
    let vad = Silero::load(&models_dir().join("silero_vad_16k.safetensors")).unwrap();
    let metrics = AgentMetrics::new(&voice_runtime::Metrics::new("agent_test").unwrap()).unwrap();
    let shared = Shared { backends, vad: Arc::new(vad), end_of_turn, metrics: metrics.clone(), config: Arc::new(config) };
    // 100 ms of playout queue, like the LiveKit transport's audio source.
    let (room, events) = InMemoryTransport::new(100);
    let conversation = Conversation::new(shared, Arc::new(room.clone()), Status::new("test"));
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conversation.run(events, cancel.clone()));
    Harness { room, stt, tts, task, cancel, metrics }
}

fn messages(room: &InMemoryTransport, topic: &str) -> Vec<(Instant, Value)> {
    room.data().into_iter().filter(|m| m.topic == topic).map(|m| (m.at, serde_json::from_slice(&m.payload).unwrap())).collect()
}

/// Wait until `pred` holds over the room's data messages.
async fn wait_for(room: &InMemoryTransport, what: &str, limit: Duration, pred: impl Fn(&InMemoryTransport) -> bool) {
    let start = Instant::now();
    while !pred(room) {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; messages: {:#?}",
            room.data().iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn final_agent(room: &InMemoryTransport, turn_after: u64) -> Option<Value> {
    messages(room, TOPIC_TRANSCRIPT)
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["role"] == "agent" && v["final"] == true && v["turn"].as_u64().unwrap_or(0) > turn_after)
}

/// A frame louder than this (RMS, s16) holds speech.
const LOUD: f64 = 100.0;

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// The index of the 20 ms frame of `audio` whose arrival gave the agent's turn detector its last
/// speech window: Silero VAD and the detector with the default settings, run over what the agent
/// received (`before`, then `audio`; the VAD's state depends on both).
fn last_speech_frame(before: &[i16], audio: &[i16]) -> usize {
    let mut vad = Silero::load(&models_dir().join("silero_vad_16k.safetensors")).unwrap().stream();
    let mut detector = TurnDetector::new(AgentConfig::default().turn);
    let t0 = Instant::now();
    let at = |i: usize| t0 + Duration::from_millis(20 * i as u64);
    for f in before.chunks(320) {
        vad.push(f).unwrap();
    }
    for (i, f) in audio.chunks(320).enumerate() {
        for p in vad.push(f).unwrap() {
            for ev in detector.push(p, at(i)) {
                if let TurnEvent::EndOfTurn { last_speech, .. } = ev {
                    return ((last_speech - t0).as_millis() / 20) as usize;
                }
            }
        }
    }
    panic!("the turn detector never ended the turn");
}

fn non_silent(frames: &[PlayedFrame]) -> usize {
    frames.iter().filter(|f| rms(&f.samples) > LOUD).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_with_speech_and_the_metrics_add_up() {
    let _serial = SERIAL.lock().await;
    let h = start(AgentConfig::default()).await;
    let question = blocking(|| speak(h.tts, "What is the capital of France?", "am_adam"));
    let lead = vec![0i16; 300 * 16];
    h.room.say(&lead).await.unwrap();
    let asked = Instant::now();
    let mut fed = h.room.say_timed(&question).await.unwrap();
    let tail = vec![0i16; 800 * 16];
    fed.extend(h.room.say_timed(&tail).await.unwrap());
    let heard_by_agent: Vec<i16> = question.iter().chain(&tail).copied().collect();
    // The last 20 ms frame with speech in it (Kokoro's audio ends in a little silence).
    let last_loud = question.chunks(320).rposition(|c| rms(c) > LOUD).expect("the question has speech");
    wait_for(&h.room, "the agent's answer", Duration::from_secs(90), |r| final_agent(r, 0).is_some()).await;
    // Let the tail play out.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let transcripts = messages(&h.room, TOPIC_TRANSCRIPT);
    let user = transcripts.iter().map(|(_, v)| v).find(|v| v["role"] == "user" && v["final"] == true).expect("a final user transcript");
    let said = user["text"].as_str().unwrap().to_lowercase();
    assert!(said.contains("capital") && said.contains("france"), "user transcript: {said}");
    let answer = final_agent(&h.room, 0).unwrap();
    let answer_text = answer["text"].as_str().unwrap().to_lowercase();
    assert!(answer_text.contains("paris"), "agent said: {answer_text}");
    assert_eq!(answer["interrupted"], false);

    // The user heard it: the room played the answer, and it transcribes back to it.
    let played: Vec<PlayedFrame> = h.room.played().into_iter().filter(|f| f.at > asked).collect();
    assert!(non_silent(&played) > 50, "only {} non-silent frames played", non_silent(&played));
    let heard = blocking(|| transcribe(h.stt, &played));
    assert!(heard.contains("paris"), "heard: {heard}");

    // States in order, and the metrics add up.
    let states: Vec<String> = messages(&h.room, TOPIC_STATE).iter().map(|(_, v)| v["state"].as_str().unwrap().to_string()).collect();
    let pos = |s: &str| states.iter().position(|x| x == s).unwrap_or_else(|| panic!("no {s} in {states:?}"));
    assert!(pos("thinking") < pos("speaking") && states.last().unwrap() == "listening", "{states:?}");
    let (_, m) = messages(&h.room, TOPIC_METRICS).pop().expect("a metrics message");
    let stages = ["end_of_utterance_ms", "stt_final_ms", "rag_ms", "llm_ttft_ms", "first_sentence_ms", "tts_ttfa_ms", "publish_ms"];
    let sum: f64 = stages.iter().map(|k| m[k].as_f64().unwrap()).sum();
    let total = m["voice_to_voice_ms"].as_f64().unwrap();
    assert!((sum - total).abs() < 0.01, "{m}");
    // Each stage is two of the turn's instants in order (negative = recorded out of order); the
    // ones that do work take time (rag may be ~0: no collection here; stt_final too: the final
    // transcript started 96 ms into the silence, FinalCandidate, and is often done when the
    // turn ends).
    for k in stages {
        assert!(m[k].as_f64().unwrap() >= 0.0, "{k} negative: {m}");
    }
    for k in ["end_of_utterance_ms", "llm_ttft_ms", "tts_ttfa_ms"] {
        assert!(m[k].as_f64().unwrap() > 1.0, "{k} should take time: {m}");
    }
    // Voice-to-voice measured from outside, not from the agent's clock. Its start: the agent's
    // turn detector, replayed here over the same audio with the instants this side handed each
    // frame over, says which frame's arrival was the last speech; its end: the answer's first
    // frame played (at most one 10 ms tick after the agent handed it over). They agree within 50 ms.
    let vad_last = last_speech_frame(&lead, &heard_by_agent);
    let first_played = h.room.played().into_iter().find(|f| f.at > fed[vad_last]).expect("a frame played");
    let outside_ms = (first_played.at - fed[vad_last]).as_secs_f64() * 1e3;
    // What the user hears: their last loud frame -> the answer's first loud frame. Longer than the
    // agent's figure by the VAD's decay after speech (Silero's probability trails off over a few
    // windows) and by the 20 ms kept before the voice's first sound; the silence the voice starts
    // with is skipped, so the answer is loud within 40 ms of its first frame.
    let first_loud = h.room.played().into_iter().find(|f| f.at > fed[last_loud] && rms(&f.samples) > LOUD).expect("a loud frame played");
    let heard_ms = (first_loud.at - fed[last_loud]).as_secs_f64() * 1e3;
    let onset_ms = (first_loud.at - first_played.at).as_secs_f64() * 1e3;
    println!(
        "voice-to-voice: agent {total:.1} ms, measured outside {outside_ms:.1} ms; heard {heard_ms:.1} ms \
         (VAD heard speech {} ms past the last loud frame; first loud frame {onset_ms:.0} ms into the answer)",
        (vad_last as i64 - last_loud as i64) * 20
    );
    assert!((outside_ms - total).abs() < 50.0, "agent says {total:.1} ms, measured {outside_ms:.1} ms: {m}");
    assert!(onset_ms <= 40.0, "the answer's first {onset_ms:.0} ms played were silence");
    // The endpointing silence is the configured 500 ms, within one VAD window and a frame.
    let eou = m["end_of_utterance_ms"].as_f64().unwrap();
    assert!((450.0..600.0).contains(&eou), "{m}");
    println!("answer: {answer_text:?}; heard: {heard:?}; metrics: {m}");
    h.cancel.cancel();
    h.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_flushes_within_a_frame_and_a_backchannel_resumes() {
    let _serial = SERIAL.lock().await;
    let h = start(AgentConfig::default()).await;
    let story = blocking(|| speak(h.tts, "Please tell me a long story about a brave little dragon.", "am_adam"));
    let mhm = blocking(|| speak(h.tts, "Yeah, okay.", "af_bella"));
    let interruption = jfk();

    // 1. A long answer starts; a backchannel pauses it, then it resumes.
    h.room.say(&story).await.unwrap();
    h.room.silence(Duration::from_millis(600)).await.unwrap();
    wait_for(&h.room, "the agent to speak", Duration::from_secs(90), |r| messages(r, TOPIC_STATE).iter().any(|(_, v)| v["state"] == "speaking"))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    h.room.say(&mhm).await.unwrap();
    h.room.silence(Duration::from_millis(700)).await.unwrap();
    wait_for(&h.room, "the false interruption to resume", Duration::from_secs(30), |r| {
        let st = messages(r, TOPIC_STATE);
        let paused = st.iter().position(|(_, v)| v["interrupted"] == true);
        paused.is_some_and(|p| st[p..].iter().any(|(_, v)| v["state"] == "speaking"))
    })
    .await;
    let resumed_at = Instant::now();
    wait_for(&h.room, "the agent's voice after the backchannel", Duration::from_secs(3), |r| {
        non_silent(&r.played().into_iter().filter(|f| f.at > resumed_at).collect::<Vec<_>>()) > 20
    })
    .await;
    assert!(
        final_agent(&h.room, 0).is_none(),
        "the backchannel ended the reply: {:#?}",
        h.room.data().iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect::<Vec<_>>()
    );

    // 2. Real speech over the agent: it stops within one frame of the decision.
    let flushes_before = h.room.flushes().len();
    h.room.say(&interruption).await.unwrap();
    h.room.silence(Duration::from_millis(700)).await.unwrap();
    wait_for(&h.room, "the interrupted reply to end", Duration::from_secs(60), |r| final_agent(r, 0).is_some()).await;
    let flushes = h.room.flushes();
    assert!(flushes.len() > flushes_before, "no flush on barge-in");
    let flush = flushes[flushes_before];
    let stopped = final_agent(&h.room, 0).unwrap();
    assert_eq!(stopped["interrupted"], true, "{stopped}");
    // Nothing of the old reply plays after the flush: the next frames are the next answer's,
    // after it started thinking about the new question.
    let new_thinking = messages(&h.room, TOPIC_STATE).into_iter().filter(|(at, v)| *at > flush && v["state"] == "thinking").map(|(at, _)| at).next();
    let leaked: Vec<_> =
        h.room.played().into_iter().filter(|f| f.at > flush + Duration::from_millis(10) && new_thinking.is_none_or(|t| f.at < t)).collect();
    assert!(non_silent(&leaked) == 0, "{} frames of the interrupted reply played after the flush", non_silent(&leaked));

    // 3. The interruption was heard and answered.
    wait_for(&h.room, "the answer to the interruption", Duration::from_secs(90), |r| {
        messages(r, TOPIC_TRANSCRIPT).iter().filter(|(_, v)| v["role"] == "agent" && v["final"] == true).count() >= 2
    })
    .await;
    let users: Vec<String> = messages(&h.room, TOPIC_TRANSCRIPT)
        .iter()
        .filter(|(_, v)| v["role"] == "user" && v["final"] == true)
        .map(|(_, v)| v["text"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(users.iter().any(|u| u.contains("country")), "{users:?}");
    h.cancel.cancel();
    h.task.await.unwrap().unwrap();
}

/// The agent's endpointing as `voice-agent` starts it by default: Smart Turn asked at 96 ms of
/// silence (partial transcripts held meanwhile), "finished" taking effect at 200 ms, at most 2.5 s
/// of waiting when it says the user has not finished.
async fn start_semantic() -> Harness {
    let dir = voice_models::Fetcher::new(None).resolve("smart-turn-v3", true, &[]).expect("fetching smart-turn-v3").dir;
    let model: Arc<dyn EndOfTurnModel> = Arc::new(SmartTurnModel::load(&dir).unwrap());
    let mut config = AgentConfig::default();
    config.turn = config.turn.with_end_of_turn_model(None, MAX_END_SILENCE);
    start_with(config, Some(model), 1000).await
}

fn decisions(h: &Harness, outcome: &str) -> u64 {
    h.metrics.end_of_turn_decisions.with_label_values(&[outcome]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_end_of_turn_waits_through_a_pause_and_answers_a_finished_question_quickly() {
    let _serial = SERIAL.lock().await;
    let h = start_semantic().await;
    let first = blocking(|| speak(h.tts, "I would like to book a table for", "am_adam"));
    let rest = blocking(|| speak(h.tts, "four people tonight, please.", "am_adam"));
    let question = blocking(|| speak(h.tts, "What is the capital of France?", "am_adam"));

    // 1. "I would like to book a table for ... four people tonight, please.": a 400 ms pause
    // inside (Kokoro's own trailing silence trimmed). A fixed 200 ms silence would end the turn
    // there; the model says "not finished" and the agent waits.
    let speech_end = |a: &[i16]| a.chunks(320).rposition(|c| rms(c) > LOUD).map_or(a.len(), |i| (i + 1) * 320);
    h.room.silence(Duration::from_millis(300)).await.unwrap();
    h.room.say(&first[..speech_end(&first)]).await.unwrap();
    h.room.silence(Duration::from_millis(400)).await.unwrap();
    h.room.say(&rest).await.unwrap();
    h.room.silence(Duration::from_millis(800)).await.unwrap();
    wait_for(&h.room, "the answer to the booking", Duration::from_secs(90), |r| final_agent(r, 0).is_some()).await;
    let users: Vec<String> = messages(&h.room, TOPIC_TRANSCRIPT)
        .iter()
        .filter(|(_, v)| v["role"] == "user" && v["final"] == true)
        .map(|(_, v)| v["text"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(users.len(), 1, "the sentence was cut into several turns: {users:?}");
    assert!(users[0].contains("table") && users[0].contains("people"), "one turn, the whole sentence: {users:?}");
    assert!(decisions(&h, "incomplete") >= 1, "the pause was not judged unfinished");
    assert_eq!(decisions(&h, "complete"), 1);
    let answers = messages(&h.room, TOPIC_TRANSCRIPT).iter().filter(|(_, v)| v["role"] == "agent" && v["final"] == true).count();
    assert_eq!(answers, 1);

    // 2. A finished question: the turn ends at the first verdict, under 300 ms after the last
    // speech (the decision runs during the 200 ms of silence; it may end a little later).
    let before = messages(&h.room, TOPIC_METRICS).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.room.say(&question).await.unwrap();
    h.room.silence(Duration::from_millis(800)).await.unwrap();
    wait_for(&h.room, "the answer to the question", Duration::from_secs(90), |r| messages(r, TOPIC_METRICS).len() > before).await;
    let (_, m) = messages(&h.room, TOPIC_METRICS).pop().unwrap();
    let eou = m["end_of_utterance_ms"].as_f64().unwrap();
    println!(
        "end of utterance {eou:.0} ms; decisions complete {} incomplete {} max_silence {}; model {:.1} ms mean; {m}",
        decisions(&h, "complete"),
        decisions(&h, "incomplete"),
        decisions(&h, "max_silence"),
        1e3 * h.metrics.end_of_turn_model.get_sample_sum() / h.metrics.end_of_turn_model.get_sample_count().max(1) as f64
    );
    assert_eq!(decisions(&h, "complete"), 2, "{m}");
    assert!((200.0..300.0).contains(&eou), "end of utterance {eou} ms: {m}");
    assert_eq!(decisions(&h, "max_silence"), 0);
    h.cancel.cancel();
    h.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_gets_an_apology_and_the_next_turn_works_again() {
    let _serial = SERIAL.lock().await;
    let (stt, _, tts) = tokio::task::spawn_blocking(services).await.unwrap();
    // voice-llm is "down": nothing listens on its port yet.
    let (llm_http, llm_grpc) = (voice_testkit::free_port(), voice_testkit::free_port());
    let settings = ReplySettings {
        llm_model: String::new(),
        max_tokens: 40,
        temperature: 0.0,
        seed: Some(0),
        voice: "af_heart".into(),
        speed: 1.0,
        stt_model: String::new(),
        language: "en".into(),
        partial_interval_ms: 0,
        collection: String::new(),
        context_tokens: 200,
        call_timeout: Duration::from_secs(30),
        retries: 2,
    };
    let urls =
        BackendUrls { stt: stt.grpc.clone(), llm: format!("http://127.0.0.1:{llm_grpc}"), embed: "http://127.0.0.1:1".into(), tts: tts.grpc.clone() };
    let vad = Silero::load(&models_dir().join("silero_vad_16k.safetensors")).unwrap();
    let metrics = AgentMetrics::new(&voice_runtime::Metrics::new("agent_outage").unwrap()).unwrap();
    let shared = Shared {
        backends: Backends::new(&urls, None, settings).unwrap(),
        vad: Arc::new(vad),
        end_of_turn: None,
        metrics: metrics.clone(),
        config: Arc::new(AgentConfig::default()),
    };
    let (room, events) = InMemoryTransport::new(100);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Conversation::new(shared, Arc::new(room.clone()), Status::new("outage")).run(events, cancel.clone()));
    let mic = room.microphone();
    let question = blocking(|| speak(tts, "What is the capital of France?", "am_adam"));

    // 1. The LLM is unreachable: after the retries the agent says so, out loud.
    let asked = Instant::now();
    mic.say(&question).await;
    wait_for(&room, "the apology", Duration::from_secs(60), |r| final_agent(r, 0).is_some()).await;
    let apology = final_agent(&room, 0).unwrap()["text"].as_str().unwrap().to_lowercase();
    assert!(apology.contains("trouble"), "{apology}");
    assert_eq!(metrics.backend_errors.with_label_values(&["llm"]).get(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = blocking(|| transcribe(stt, &room.played().into_iter().filter(|f| f.at > asked).collect::<Vec<_>>()));
    assert!(heard.contains("trouble"), "heard: {heard}");

    // 2. voice-llm comes up where the agent expects it; the next question is answered.
    let llm_bin = std::path::Path::new(env!("CARGO_BIN_EXE_voice-agent")).with_file_name("voice-llm");
    let llm_bin: &'static str = Box::leak(llm_bin.to_string_lossy().into_owned().into_boxed_str());
    let llm_svc: &'static Service = Box::leak(Box::new(Service::new(llm_bin, "VOICE_LLM")));
    let _llm = blocking(|| llm_svc.start_on(llm_http, llm_grpc, &["--model", "smollm2-135m-instruct"], &[]));
    let turns_before = messages(&room, TOPIC_TRANSCRIPT).iter().filter(|(_, v)| v["role"] == "agent" && v["final"] == true).count();
    mic.say(&question).await;
    wait_for(&room, "the answer after the restart", Duration::from_secs(60), |r| {
        messages(r, TOPIC_TRANSCRIPT).iter().filter(|(_, v)| v["role"] == "agent" && v["final"] == true).count() > turns_before
    })
    .await;
    let answer = messages(&room, TOPIC_TRANSCRIPT).into_iter().rfind(|(_, v)| v["role"] == "agent" && v["final"] == true).unwrap().1;
    assert!(answer["text"].as_str().unwrap().to_lowercase().contains("paris"), "{answer}");

    // 3. The user leaves mid-answer: the loop ends at once and nothing more plays.
    let story = blocking(|| speak(tts, "Please tell me a long story about a brave little dragon.", "am_adam"));
    mic.say(&story).await;
    wait_for(&room, "the story to start", Duration::from_secs(60), |r| {
        messages(r, TOPIC_STATE).iter().filter(|(_, v)| v["state"] == "speaking").count() >= 3
    })
    .await;
    drop(mic);
    room.send(voice_agent::transport::TransportEvent::UserLeft("user".into())).await.unwrap();
    let left = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("the conversation ended when the user left").unwrap().unwrap();
    assert_eq!(room.queued_frames(), 0, "queued audio was not dropped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<_> = room.played().into_iter().filter(|f| f.at > left + Duration::from_millis(20)).collect();
    assert_eq!(non_silent(&after), 0, "audio played after the user left");
    let _ = cancel;
}
