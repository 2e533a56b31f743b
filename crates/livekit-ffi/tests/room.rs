//! Two clients in one room on a real livekit-server (started here on free loopback ports): audio
//! out and in (440 Hz at 48 kHz -> 16 kHz mono), a data message, clear_queue, disconnect.
//!
//! Needs the server binary (`$LIVEKIT_SERVER_BIN`, default `~/.cache/voice-ai/livekit/livekit-server-v1.13.5`, from
//! `go install github.com/livekit/livekit-server/cmd/server@v1.13.5`) and the library (model
//! `livekit-ffi`, or `$LIVEKIT_FFI_LIB`). Both missing is a failure, not a skip.
//!
//! One process can initialise the library once: both clients share one `Ffi` and join with two
//! identities (two rooms handles in the same library).

use std::{
    f64::consts::PI,
    sync::Arc,
    time::{Duration, Instant},
};

use livekit_api::access_token::{AccessToken, VideoGrants};
use tokio::sync::mpsc;
use voice_livekit::{AudioFrame, AudioSource, AudioStream, DisconnectReason, Ffi, Room, RoomEvent, RoomOptions, TrackKind};

use voice_testkit::livekit::{LiveKitServer, API_KEY, API_SECRET};

fn token(identity: &str, room: &str) -> String {
    AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_string(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

fn load_ffi() -> Arc<Ffi> {
    let path = Ffi::locate().unwrap_or_else(|e| panic!("{e:#}"));
    Ffi::load(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,voice_livekit=info".into()))
        .with_test_writer()
        .try_init();
}

/// The first event `pick` accepts, within `within`; the events skipped on the way are returned too.
async fn wait_for<T>(
    events: &mut mpsc::UnboundedReceiver<RoomEvent>,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(&RoomEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => {
                if let Some(t) = pick(&e) {
                    return t;
                }
                eprintln!("  (event while waiting for {what}: {e:?})");
            }
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {within:?}"),
        }
    }
}

/// 10 ms of a sine at 48 kHz mono, continuing the phase of frame `index`.
fn sine_frame(freq: f64, index: usize, amplitude: f64) -> Vec<i16> {
    (0..480).map(|i| ((2.0 * PI * freq * (index * 480 + i) as f64 / 48_000.0).sin() * amplitude * 32767.0) as i16).collect()
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Strongest frequency (Goertzel, 2 Hz steps over 100..2000 Hz).
fn dominant_frequency(samples: &[i16], sample_rate: f64) -> f64 {
    let mut best = (0.0, 0.0);
    let mut f = 100.0;
    while f <= 2000.0 {
        let coeff = 2.0 * (2.0 * PI * f / sample_rate).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        if power > best.1 {
            best = (f, power);
        }
        f += 2.0;
    }
    best.0
}

/// Receive side of the test: every frame with its arrival time.
fn spawn_receiver(mut stream: AudioStream) -> (mpsc::UnboundedReceiver<(Instant, AudioFrame)>, tokio::task::JoinHandle<u64>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(frame) = stream.recv().await {
            if tx.send((Instant::now(), frame)).is_err() {
                break;
            }
        }
        stream.dropped_frames()
    });
    (rx, task)
}

/// Capture in real time (one 10 ms frame per tick) so that the source's queue stays empty.
async fn realtime(source: &AudioSource, frames: usize, mut frame: impl FnMut(usize) -> Vec<i16>) -> Vec<Instant> {
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames {
        ticker.tick().await;
        times.push(Instant::now());
        source.capture_frame(&frame(i)).await.unwrap();
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_audio_data_clear_disconnect() {
    init_tracing();
    let ffi = load_ffi();
    eprintln!("liblivekit_ffi {} from {}", ffi.version(), ffi.path().display());
    let server = LiveKitServer::start();
    let room_name = "voice-livekit-test";

    // B (the listener, like the agent) joins first, then A (the speaker).
    let t = Instant::now();
    let (b, mut b_events) = Room::connect(&ffi, &server.url(), &token("listener-b", room_name), RoomOptions::default()).await.unwrap();
    eprintln!("B connected in {:?}", t.elapsed());
    let t = Instant::now();
    let (a, mut a_events) = Room::connect(&ffi, &server.url(), &token("speaker-a", room_name), RoomOptions::default()).await.unwrap();
    eprintln!("A connected in {:?}", t.elapsed());
    assert_eq!((a.name(), a.local_identity(), b.local_identity()), (room_name, "speaker-a", "listener-b"));
    assert!(a.is_connected() && b.is_connected());
    // A was told about B (already there); B is told about A.
    wait_for(&mut a_events, Duration::from_secs(5), "B as existing participant", |e| {
        matches!(e, RoomEvent::ParticipantConnected { identity, .. } if identity == "listener-b").then_some(())
    })
    .await;
    wait_for(&mut b_events, Duration::from_secs(10), "A joining", |e| {
        matches!(e, RoomEvent::ParticipantConnected { identity, .. } if identity == "speaker-a").then_some(())
    })
    .await;

    // --- audio: A publishes 48 kHz mono; B subscribes at 16 kHz mono.
    let t_publish = Instant::now();
    let source = Arc::new(a.publish_audio_with_queue("tone", 48_000, 1, 1000).await.unwrap());
    eprintln!("A published {} in {:?}", source.track_sid(), t_publish.elapsed());
    assert!(source.track_sid().starts_with("TR_"), "{}", source.track_sid());
    let track = wait_for(&mut b_events, Duration::from_secs(10), "TrackSubscribed", |e| match e {
        RoomEvent::TrackSubscribed { participant, track } if participant == "speaker-a" => Some(track.clone()),
        _ => None,
    })
    .await;
    eprintln!("B subscribed to {} {:?} after {:?}", track.sid, track.kind, t_publish.elapsed());
    assert_eq!((track.sid.as_str(), track.kind), (source.track_sid(), TrackKind::KindAudio));
    let stream = AudioStream::subscribe(&ffi, &track, 16_000, 1).unwrap();
    drop(track);
    let (mut frames, receiver) = spawn_receiver(stream);

    // 3 s of 440 Hz in 10 ms frames, in real time.
    let producer = {
        let source = source.clone();
        tokio::spawn(async move { realtime(&source, 300, |i| sine_frame(440.0, i, 0.3)).await })
    };
    let t_audio = Instant::now();
    let mut tone: Vec<i16> = Vec::new();
    let mut first_sound = None;
    let mut frame_sizes = std::collections::BTreeSet::new();
    while tone.len() < 16_000 {
        let (at, frame) = tokio::time::timeout(Duration::from_secs(10), frames.recv()).await.expect("no audio frames at B").expect("stream ended");
        assert_eq!((frame.sample_rate, frame.num_channels), (16_000, 1), "B gets 16 kHz mono");
        assert_eq!(frame.samples.len(), frame.samples_per_channel as usize);
        frame_sizes.insert(frame.samples_per_channel);
        if rms(&frame.samples) > 1000.0 {
            first_sound.get_or_insert(at);
            tone.extend_from_slice(&frame.samples);
        }
    }
    let first_sound = first_sound.unwrap();
    let freq = dominant_frequency(&tone[..16_000], 16_000.0);
    eprintln!(
        "B: first audible frame {:?} after A's first capture; frame sizes {frame_sizes:?} samples; 1 s of tone: rms {:.0}, dominant {freq} Hz",
        first_sound - t_audio,
        rms(&tone)
    );
    assert!((430.0..=450.0).contains(&freq), "dominant frequency {freq} Hz, expected ~440 Hz");
    assert_eq!(frame_sizes, [160].into(), "10 ms frames at 16 kHz");
    producer.await.unwrap();

    // Onset latency: real-time silence, then a 1 kHz tone; when does B hear it?
    while frames.try_recv().is_ok() {}
    let mut onset_times = Vec::new();
    let times = realtime(&source, 100, |i| if i < 50 { vec![0; 480] } else { sine_frame(1000.0, i, 0.3) }).await;
    let onset = times[50];
    while let Ok((at, frame)) = frames.try_recv() {
        if at > onset && rms(&frame.samples) > 1000.0 {
            onset_times.push(at);
        }
    }
    // Frames still in flight.
    let deadline = Instant::now() + Duration::from_millis(500);
    while onset_times.is_empty() && Instant::now() < deadline {
        if let Ok(Some((at, frame))) = tokio::time::timeout(Duration::from_millis(50), frames.recv()).await {
            if at > onset && rms(&frame.samples) > 1000.0 {
                onset_times.push(at);
            }
        }
    }
    let latency = *onset_times.first().expect("B never heard the onset") - onset;
    eprintln!("mouth-to-ear over loopback (capture of the first tone frame -> B's first loud 16 kHz frame): {latency:?}");
    assert!(latency < Duration::from_millis(500), "latency {latency:?}");

    // --- clear_queue: queue 1 s of tone at once, clear after 200 ms, then real-time silence.
    realtime(&source, 30, |_| vec![0; 480]).await;
    while frames.try_recv().is_ok() {}
    for i in 0..100 {
        source.capture_frame(&sine_frame(1000.0, i, 0.3)).await.unwrap();
    }
    let queued = source.queued_duration();
    eprintln!("A queued {queued:?} of tone at once");
    assert!(queued > Duration::from_millis(850), "queued {queued:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t_clear = Instant::now();
    source.clear_queue().unwrap();
    assert_eq!(source.queued_duration(), Duration::ZERO);
    realtime(&source, 150, |_| vec![0; 480]).await;
    let mut loud = Vec::new();
    while let Ok((at, frame)) = frames.try_recv() {
        if rms(&frame.samples) > 1000.0 {
            loud.push(at);
        }
    }
    let (first_loud, last_loud) = (*loud.first().expect("tone before clear never heard"), *loud.last().unwrap());
    let tail = last_loud.saturating_duration_since(t_clear);
    eprintln!(
        "clear_queue: tone heard for {:?} in all ({} frames), the last {:?} after clear_queue (without it: ~800 ms more)",
        last_loud - first_loud,
        loud.len(),
        tail
    );
    assert!(tail < latency + Duration::from_millis(200), "tone still heard {tail:?} after clear_queue (latency {latency:?})");
    assert!(loud.len() < 60, "{} loud frames: the queue was not cleared", loud.len());

    // --- data: A -> B, reliable and lossy.
    let t_data = Instant::now();
    a.publish_data(b"hello from A", "greeting", true).await.unwrap();
    let (participant, payload, reliable) = wait_for(&mut b_events, Duration::from_secs(5), "reliable data", |e| match e {
        RoomEvent::DataReceived { participant, topic, payload, reliable } if topic == "greeting" => {
            Some((participant.clone(), payload.clone(), *reliable))
        }
        _ => None,
    })
    .await;
    eprintln!("B got A's reliable data message {:?} after publish_data was called", t_data.elapsed());
    assert_eq!((participant.as_str(), payload.as_slice(), reliable), ("speaker-a", &b"hello from A"[..], true));
    a.publish_data(&[0u8, 1, 2, 255], "binary", false).await.unwrap();
    let (payload, reliable) = wait_for(&mut b_events, Duration::from_secs(5), "lossy data", |e| match e {
        RoomEvent::DataReceived { topic, payload, reliable, .. } if topic == "binary" => Some((payload.clone(), *reliable)),
        _ => None,
    })
    .await;
    assert_eq!((payload.as_slice(), reliable), (&[0u8, 1, 2, 255][..], false));

    // --- disconnect: A leaves; B sees it; A's event channel ends.
    let t_leave = Instant::now();
    a.disconnect().await.unwrap();
    assert!(!a.is_connected());
    assert!(a.publish_data(b"x", "t", true).await.is_err(), "publish_data after disconnect fails");
    let reason = wait_for(&mut b_events, Duration::from_secs(10), "ParticipantDisconnected", |e| match e {
        RoomEvent::ParticipantDisconnected { identity, reason } if identity == "speaker-a" => Some(*reason),
        _ => None,
    })
    .await;
    eprintln!("B saw A leave ({reason:?}) {:?} after A's disconnect() was called", t_leave.elapsed());
    assert_eq!(reason, DisconnectReason::ClientInitiated);
    let a_rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(e) = a_events.recv().await {
            rest.push(e);
        }
        rest
    })
    .await
    .expect("A's event channel did not close after disconnect");
    eprintln!("A's last events: {a_rest:?}");
    // B's stream of A's track ends too.
    let dropped = tokio::time::timeout(Duration::from_secs(10), receiver).await.expect("B's audio stream did not end").unwrap();
    eprintln!("B's audio stream ended; frames dropped for a slow consumer: {dropped}");
    drop(source); // after disconnect: no unpublish request is sent

    // --- dropping a Room without disconnect() still leaves the room.
    let t = Instant::now();
    let (c, _c_events) = Room::connect(&ffi, &server.url(), &token("dropped-c", room_name), RoomOptions::default()).await.unwrap();
    eprintln!("C connected in {:?}", t.elapsed());
    wait_for(&mut b_events, Duration::from_secs(10), "C joining", |e| {
        matches!(e, RoomEvent::ParticipantConnected { identity, .. } if identity == "dropped-c").then_some(())
    })
    .await;
    eprintln!("B saw C join {:?} after C's connect() started", t.elapsed());
    let t = Instant::now();
    drop(c);
    wait_for(&mut b_events, Duration::from_secs(10), "C leaving after its Room was dropped", |e| {
        matches!(e, RoomEvent::ParticipantDisconnected { identity, .. } if identity == "dropped-c").then_some(())
    })
    .await;
    eprintln!("B saw C leave {:?} after C's Room was dropped", t.elapsed());

    b.disconnect().await.unwrap();
    drop((a, b));
    drop(server);
}
