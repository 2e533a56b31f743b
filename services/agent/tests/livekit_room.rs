//! The agent's LiveKit transport on a real livekit-server: the agent joins a room, hears a user's
//! microphone at 16 kHz, publishes 48 kHz audio and data messages the user receives; then the
//! server is killed and started again on the same port, and the agent is back in the room (its
//! audio and data reach the user again) without the conversation noticing more than a gap.

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
