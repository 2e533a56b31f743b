//! The agent's LiveKit transport on a real livekit-server: the agent joins a room, hears a user's
//! microphone at 16 kHz, publishes 48 kHz audio and data messages the user receives; then the
//! server is killed and started again on the same port, and the agent is back in the room (its
//! audio and data reach the user again) without the conversation noticing more than a gap.
//! And the barge-in path of the agent's output: a second of queued audio, flushed, is not heard.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use voice_agent::{
    dispatch::RoomJoiner,
    livekit::LiveKitJoiner,
    token::{mint, LiveKitKeys},
    transport::TransportEvent,
};
use voice_livekit::{AudioStream, Ffi, Room, RoomEvent, RoomOptions, TrackKind};
use voice_testkit::livekit::{LiveKitServer, API_KEY, API_SECRET};

fn keys() -> LiveKitKeys {
    LiveKitKeys { api_key: API_KEY.into(), api_secret: API_SECRET.parse().unwrap() }
}

fn tone(i: usize, rate: f64, n: usize) -> Vec<i16> {
    (0..n).map(|k| ((2.0 * std::f64::consts::PI * 440.0 * ((i * n + k) as f64) / rate).sin() * 8000.0) as i16).collect()
}

fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

/// The user's side: join, publish a 440 Hz "voice" at 48 kHz, listen to the agent.
async fn user(ffi: &Arc<Ffi>, url: &str, room: &str) -> (Room, tokio::sync::mpsc::UnboundedReceiver<RoomEvent>, voice_livekit::AudioSource) {
    let jwt = mint(&keys(), room, "user-1", "User", Duration::from_secs(600)).unwrap();
    let (r, ev) = Room::connect(ffi, url, &jwt, RoomOptions::default()).await.expect("user joins");
    let mic = r.publish_audio("mic", 48_000, 1).await.unwrap();
    (r, ev, mic)
}

/// Wait for the agent's audio (loud frames) and a data message on `topic` at the user.
async fn hears_agent(ffi: &Arc<Ffi>, events: &mut tokio::sync::mpsc::UnboundedReceiver<RoomEvent>, topic: &str, limit: Duration) -> (f64, bool) {
    let start = Instant::now();
    let mut stream: Option<AudioStream> = None;
    let (mut loudest, mut got_data) = (0.0f64, false);
    while start.elapsed() < limit && !(loudest > 1000.0 && got_data) {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(RoomEvent::TrackSubscribed { participant, track }) if participant == "agent" && track.kind == TrackKind::KindAudio => {
                    stream = Some(AudioStream::subscribe(ffi, &track, 48_000, 1).unwrap());
                }
                Some(RoomEvent::DataReceived { topic: t, .. }) if t == topic => got_data = true,
                Some(_) => {}
                None => break,
            },
            f = async { match stream.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if let Some(f) = f { loudest = loudest.max(rms(&f.samples)); }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    (loudest, got_data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_talks_in_a_real_room_and_comes_back_after_a_server_restart() {
    let server = LiveKitServer::start();
    let (url, port) = (server.url(), server.port);
    let ffi_path = Ffi::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let joiner = LiveKitJoiner::new(&ffi_path, url.clone(), keys()).unwrap();
    let ffi = Ffi::load(&ffi_path).unwrap();

    let (user_room, mut user_events, mic) = user(&ffi, &url, "restart").await;
    let mut agent = joiner.join("restart").await.expect("the agent joins");

    // The agent hears the user at 16 kHz, mono.
    let talk = tokio::spawn(async move {
        for i in 0..300 {
            if mic.capture_frame(&tone(i, 48_000.0, 480)).await.is_err() {
                break;
            }
        }
        mic
    });
    let start = Instant::now();
    let (mut joined, mut samples) = (false, 0usize);
    while start.elapsed() < Duration::from_secs(10) && samples < 16_000 {
        match tokio::time::timeout(Duration::from_secs(10), agent.events.recv()).await {
            Ok(Some(TransportEvent::UserJoined(who))) => joined |= who == "user-1",
            Ok(Some(TransportEvent::Audio(pcm))) => {
                assert_eq!(pcm.len(), 160, "10 ms frames at 16 kHz");
                if rms(&pcm) > 1000.0 {
                    samples += pcm.len();
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(joined && samples >= 16_000, "the agent did not hear the user (joined {joined}, {samples} loud samples)");
    let _mic = talk.await.unwrap();

    // The user hears the agent and gets its data messages.
    let out = agent.output.clone();
    let speak = |out: Arc<dyn voice_agent::transport::AgentOutput>| {
        tokio::spawn(async move {
            for i in 0..400 {
                let _ = out.push_frame(tone(i, 48_000.0, 480)).await;
                if i % 50 == 0 {
                    let _ = out.send_data("agent.state", br#"{"state":"speaking"}"#.to_vec()).await;
                }
            }
        })
    };
    let talking = speak(out.clone());
    let (loudest, data) = hears_agent(&ffi, &mut user_events, "agent.state", Duration::from_secs(10)).await;
    assert!(loudest > 1000.0 && data, "before the restart: loudest {loudest}, data {data}");
    talking.abort();

    // The server goes away and comes back on the same port.
    drop(server);
    drop(user_room);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = LiveKitServer::start_on(port);
    // The user's client reconnects on its own side (the browser does); the agent by itself.
    let (_user_room, mut user_events, _mic) = user(&ffi, &url, "restart").await;
    let talking = speak(out.clone());
    let (loudest, data) = hears_agent(&ffi, &mut user_events, "agent.state", Duration::from_secs(60)).await;
    talking.abort();
    assert!(loudest > 1000.0 && data, "after the restart the agent was not back: loudest {loudest}, data {data}\n{}", server.log_tail());
    // The conversation's event stream never closed.
    while let Ok(ev) = agent.events.try_recv() {
        assert!(!matches!(ev, TransportEvent::Closed(_)), "the transport gave up: {ev:?}");
    }
    (agent.leave)().await;
}

/// 100 frames of 10 ms tone into the agent's output; how long that took (a source that holds a
/// second takes them at once).
async fn queue_a_second(out: &Arc<dyn voice_agent::transport::AgentOutput>) -> Duration {
    let t = Instant::now();
    for i in 0..100 {
        out.push_frame(tone(i, 48_000.0, 480)).await.unwrap();
    }
    t.elapsed()
}

/// Loud audio (ms) the user hears from the agent within `window`.
async fn loud_ms_heard(stream: &mut AudioStream, window: Duration) -> f64 {
    let end = Instant::now() + window;
    let mut loud = 0usize;
    while let Ok(Some(f)) = tokio::time::timeout_at(end.into(), stream.recv()).await {
        if rms(&f.samples) > 1000.0 {
            loud += f.samples.len();
        }
    }
    loud as f64 / 48.0
}

/// The agent's output on a real room: 1 s of tone queued (the source holds a second here), then
/// `flush()` (what a barge-in calls): the user hears almost none of it. The same second without
/// the flush is heard whole first, so the measurement can see the audio a no-op flush would let
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_drops_the_queued_audio_before_the_user_hears_it() {
    let server = LiveKitServer::start();
    let url = server.url();
    let ffi_path = Ffi::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let joiner = LiveKitJoiner::new(&ffi_path, url.clone(), keys()).unwrap().with_queue_ms(1000);
    let ffi = Ffi::load(&ffi_path).unwrap();
    let (_user_room, mut user_events, _mic) = user(&ffi, &url, "flush").await;
    let agent = joiner.join("flush").await.expect("the agent joins");
    let out = agent.output.clone();
    assert_eq!(out.queue_ms(), 1000);

    // Subscribe to the agent's track; keep a little tone going until it is heard (the path is up).
    let start = Instant::now();
    let mut stream = loop {
        assert!(start.elapsed() < Duration::from_secs(20), "the user never subscribed to the agent's audio");
        if let Ok(Some(RoomEvent::TrackSubscribed { participant, track })) =
            tokio::time::timeout(Duration::from_millis(200), user_events.recv()).await
        {
            if participant == "agent" && track.kind == TrackKind::KindAudio {
                break AudioStream::subscribe(&ffi, &track, 48_000, 1).unwrap();
            }
        }
    };
    let mut warm = 0.0;
    for _ in 0..50 {
        for i in 0..10 {
            out.push_frame(tone(i, 48_000.0, 480)).await.unwrap();
        }
        warm += loud_ms_heard(&mut stream, Duration::from_millis(100)).await;
        if warm > 50.0 {
            break;
        }
    }
    assert!(warm > 50.0, "the agent's audio never reached the user");
    let _ = loud_ms_heard(&mut stream, Duration::from_millis(500)).await; // drain what is left

    // Without a flush: the second is heard (whole, give or take the edges).
    let took = queue_a_second(&out).await;
    assert!(took < Duration::from_millis(300), "queueing 1 s took {took:?}: the source does not hold a second");
    let unflushed = loud_ms_heard(&mut stream, Duration::from_millis(2500)).await;
    // With the flush right after queueing it.
    let took = queue_a_second(&out).await;
    out.flush();
    let flushed = loud_ms_heard(&mut stream, Duration::from_millis(2500)).await;
    println!("1 s queued: heard {unflushed:.0} ms without a flush, {flushed:.0} ms with one (queued in {took:?})");
    assert!(unflushed > 800.0, "without a flush only {unflushed:.0} ms of the queued second was heard");
    assert!(flushed < 200.0, "after the flush the user still heard {flushed:.0} ms of the queued second");
    (agent.leave)().await;
}
