//! Event decoding and routing without the library: garbage never panics, handles are released,
//! buffers are copied only for listeners.

use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::mpsc;

use super::*;
use crate::proto::{self, ffi_event, room_event};

/// Handles "released" by the tests (all tests share it: each test uses its own id range).
static DROPPED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

unsafe extern "C" fn record_drop(id: u64) -> bool {
    DROPPED.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    true
}

fn dropped(id: u64) -> bool {
    DROPPED.lock().unwrap().contains(&id)
}

fn encode(message: ffi_event::Message) -> Vec<u8> {
    proto::FfiEvent { message: Some(message) }.encode_to_vec()
}

fn owned(id: u64) -> proto::FfiOwnedHandle {
    proto::FfiOwnedHandle { id }
}

fn room_event(room_handle: u64, message: room_event::Message) -> Vec<u8> {
    encode(ffi_event::Message::RoomEvent(proto::RoomEvent { room_handle, message: Some(message) }))
}

fn room_sink(ffi: &Ffi, room_handle: u64) -> mpsc::UnboundedReceiver<RoomEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    ffi.register_room(room_handle, RoomSink { tx, connected: Arc::new(AtomicBool::new(true)) });
    rx
}

#[test]
fn garbage_never_panics() {
    let ffi = Ffi::for_tests(record_drop);
    // Deterministic xorshift bytes of every length up to 600.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..20_000usize {
        let len = round % 600;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        ffi.dispatch(&bytes);
    }
    // Truncations of valid events, and valid events with nonsense in them.
    let valid = [
        room_event(
            1,
            room_event::Message::ParticipantDisconnected(proto::ParticipantDisconnected { participant_identity: "x".into(), disconnect_reason: 999 }),
        ),
        encode(ffi_event::Message::AudioStreamEvent(proto::AudioStreamEvent { stream_handle: 5, message: None })),
        encode(ffi_event::Message::Connect(proto::ConnectCallback { async_id: 3, message: None })),
        encode(ffi_event::Message::Logs(proto::LogBatch {
            records: vec![proto::LogRecord { level: 77, message: "m".into(), ..Default::default() }],
        })),
    ];
    for v in &valid {
        for cut in 0..=v.len() {
            ffi.dispatch(&v[..cut]);
        }
    }
    ffi.dispatch(&[]);
    // Nothing was waiting, so nothing could be delivered; the library is still usable.
    assert!(ffi.check_alive().is_ok());
}

#[test]
fn room_events_are_routed_and_handles_released() {
    let ffi = Ffi::for_tests(record_drop);
    let mut rx = room_sink(&ffi, 100);

    let participant = proto::OwnedParticipant {
        handle: owned(1001),
        info: proto::ParticipantInfo { identity: "alice".into(), name: "Alice".into(), ..Default::default() },
    };
    ffi.dispatch(&room_event(100, room_event::Message::ParticipantConnected(proto::ParticipantConnected { info: participant })));
    match rx.try_recv().unwrap() {
        RoomEvent::ParticipantConnected { identity, name, .. } => assert_eq!((identity.as_str(), name.as_str()), ("alice", "Alice")),
        e => panic!("unexpected {e:?}"),
    }
    assert!(dropped(1001), "participant handle not kept: released at once");

    let track = proto::OwnedTrack {
        handle: owned(1002),
        info: proto::TrackInfo { sid: "TR_1".into(), kind: proto::TrackKind::KindAudio as i32, ..Default::default() },
    };
    ffi.dispatch(&room_event(100, room_event::Message::TrackSubscribed(proto::TrackSubscribed { participant_identity: "alice".into(), track })));
    let event = rx.try_recv().unwrap();
    let RoomEvent::TrackSubscribed { participant, track } = &event else { panic!("unexpected {event:?}") };
    assert_eq!((participant.as_str(), track.sid.as_str(), track.kind), ("alice", "TR_1", proto::TrackKind::KindAudio));
    assert!(!dropped(1002), "track handle is held by the event");
    drop(event);
    assert!(dropped(1002), "track handle released with the last RemoteTrack");

    // Events for a room nobody listens to: converted (handles released) and dropped.
    let publication = proto::OwnedTrackPublication { handle: owned(1003), info: Default::default() };
    ffi.dispatch(&room_event(999, room_event::Message::TrackPublished(proto::TrackPublished { participant_identity: "bob".into(), publication })));
    assert!(dropped(1003));

    ffi.dispatch(&room_event(100, room_event::Message::Disconnected(proto::Disconnected { reason: proto::DisconnectReason::RoomDeleted as i32 })));
    assert!(matches!(rx.try_recv().unwrap(), RoomEvent::Disconnected { reason: proto::DisconnectReason::RoomDeleted }));
    // End of stream: the channel closes.
    ffi.dispatch(&room_event(100, room_event::Message::Eos(proto::RoomEos {})));
    assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
}

#[test]
fn data_packets_are_copied_and_released() {
    let ffi = Ffi::for_tests(record_drop);
    let mut rx = room_sink(&ffi, 200);
    let payload = b"hello agent".to_vec();
    let packet = proto::DataPacketReceived {
        kind: proto::DataPacketKind::KindReliable as i32,
        participant_identity: "alice".into(),
        value: Some(proto::data_packet_received::Value::User(proto::UserPacket {
            data: proto::OwnedBuffer {
                handle: owned(2001),
                data: proto::BufferInfo { data_ptr: payload.as_ptr() as u64, data_len: payload.len() as u64 },
            },
            topic: Some("chat".into()),
        })),
    };
    ffi.dispatch(&room_event(200, room_event::Message::DataPacketReceived(packet)));
    match rx.try_recv().unwrap() {
        RoomEvent::DataReceived { participant, topic, payload: p, reliable } => {
            assert_eq!((participant.as_str(), topic.as_str(), p.as_slice(), reliable), ("alice", "chat", payload.as_slice(), true))
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(dropped(2001));

    // An absurd length is refused without reading.
    let packet = proto::DataPacketReceived {
        kind: 0,
        participant_identity: "alice".into(),
        value: Some(proto::data_packet_received::Value::User(proto::UserPacket {
            data: proto::OwnedBuffer { handle: owned(2002), data: proto::BufferInfo { data_ptr: 0x10, data_len: u64::MAX } },
            topic: None,
        })),
    };
    ffi.dispatch(&room_event(200, room_event::Message::DataPacketReceived(packet)));
    assert!(rx.try_recv().is_err());
    assert!(dropped(2002));
}

fn frame_event(stream_handle: u64, handle: u64, data_ptr: u64, samples_per_channel: u32) -> Vec<u8> {
    encode(ffi_event::Message::AudioStreamEvent(proto::AudioStreamEvent {
        stream_handle,
        message: Some(proto::audio_stream_event::Message::FrameReceived(proto::AudioFrameReceived {
            frame: proto::OwnedAudioFrameBuffer {
                handle: owned(handle),
                info: proto::AudioFrameBufferInfo { data_ptr, num_channels: 1, sample_rate: 16_000, samples_per_channel },
            },
        })),
    }))
}

#[test]
fn audio_frames_are_copied_for_listeners_only() {
    let ffi = Ffi::for_tests(record_drop);
    let samples: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();

    // No listener: the pointer (bogus here) must not be read, the handle must be released.
    ffi.dispatch(&frame_event(300, 3001, 0x10, 160));
    assert!(dropped(3001));

    let (tx, mut rx) = mpsc::channel(2);
    let counter = Arc::new(AtomicU64::new(0));
    ffi.register_stream(300, StreamSink { tx, dropped: counter.clone(), track_sid: "TR_A".into(), room_handle: 1 });
    ffi.dispatch(&frame_event(300, 3002, samples.as_ptr() as u64, 160));
    let frame = rx.try_recv().unwrap();
    assert_eq!((frame.samples.as_slice(), frame.sample_rate, frame.num_channels, frame.samples_per_channel), (samples.as_slice(), 16_000, 1, 160));
    assert!(dropped(3002));

    // Misaligned or oversized buffers are refused.
    ffi.dispatch(&frame_event(300, 3003, samples.as_ptr() as u64 + 1, 160));
    ffi.dispatch(&frame_event(300, 3004, samples.as_ptr() as u64, u32::MAX));
    assert!(rx.try_recv().is_err());
    assert!(dropped(3003) && dropped(3004));

    // A full channel drops (and counts) instead of blocking the library's thread.
    for h in 3005..3009 {
        ffi.dispatch(&frame_event(300, h, samples.as_ptr() as u64, 160));
    }
    assert_eq!(counter.load(Ordering::Relaxed), 2);
    assert!((3005..3009).all(dropped));

    // End of stream closes the channel.
    ffi.dispatch(&encode(ffi_event::Message::AudioStreamEvent(proto::AudioStreamEvent {
        stream_handle: 300,
        message: Some(proto::audio_stream_event::Message::Eos(proto::AudioStreamEos {})),
    })));
    assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
    assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
}

#[test]
fn unclaimed_callbacks_release_their_handles() {
    let ffi = Ffi::for_tests(record_drop);
    let publish = |async_id: u64, handle: u64| {
        encode(ffi_event::Message::PublishTrack(proto::PublishTrackCallback {
            async_id,
            message: Some(proto::publish_track_callback::Message::Publication(proto::OwnedTrackPublication {
                handle: owned(handle),
                info: Default::default(),
            })),
        }))
    };
    for i in 0..(MAX_UNCLAIMED as u64 + 1) {
        ffi.dispatch(&publish(i, 4000 + i));
    }
    // The oldest was evicted and its handle released; the others wait for a late re-key.
    assert!(dropped(4000));
    assert!(!dropped(4001));
}

#[test]
fn a_panic_fails_waiters_and_later_requests() {
    let ffi = Ffi::for_tests(record_drop);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    lock(&ffi.calls).pending.insert(7, Pending { tx: Some(tx), _keep_alive: None });
    ffi.dispatch(&encode(ffi_event::Message::Panic(proto::Panic { message: "boom".into() })));
    assert!(rx.try_recv().is_err());
    let err = ffi.request(ffi_request::Message::ClearAudioBuffer(proto::ClearAudioBufferRequest { source_handle: 1 })).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

#[test]
fn callbacks_complete_their_waiter() {
    let ffi = Ffi::for_tests(record_drop);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    lock(&ffi.calls).pending.insert(8, Pending { tx: Some(tx), _keep_alive: Some(Box::new(vec![1u8; 4])) });
    ffi.dispatch(&encode(ffi_event::Message::PublishData(proto::PublishDataCallback { async_id: 8, error: Some("nope".into()) })));
    match rx.try_recv().unwrap() {
        ffi_event::Message::PublishData(cb) => assert_eq!(cb.error.as_deref(), Some("nope")),
        m => panic!("unexpected {m:?}"),
    }
    assert!(lock(&ffi.calls).pending.is_empty());
}

#[test]
fn load_reports_a_missing_library() {
    let err = Ffi::load(std::path::Path::new("/nonexistent/liblivekit_ffi.so")).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains("fetch livekit-ffi"), "{err}");
}

#[test]
fn streams_end_when_their_track_is_unsubscribed_or_the_room_closes() {
    let ffi = Ffi::for_tests(record_drop);
    let _room = room_sink(&ffi, 500);
    let sink = |sid: &str, room_handle: u64| {
        let (tx, rx) = mpsc::channel(4);
        (StreamSink { tx, dropped: Arc::new(AtomicU64::new(0)), track_sid: sid.into(), room_handle }, rx)
    };
    let (s1, mut rx1) = sink("TR_1", 500);
    let (s2, mut rx2) = sink("TR_2", 500);
    let (s3, mut rx3) = sink("TR_3", 501);
    ffi.register_stream(1, s1);
    ffi.register_stream(2, s2);
    ffi.register_stream(3, s3);
    ffi.dispatch(&room_event(
        500,
        room_event::Message::TrackUnsubscribed(proto::TrackUnsubscribed { participant_identity: "a".into(), track_sid: "TR_1".into() }),
    ));
    assert!(matches!(rx1.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    assert!(matches!(rx2.try_recv(), Err(mpsc::error::TryRecvError::Empty)));
    ffi.dispatch(&room_event(500, room_event::Message::Eos(proto::RoomEos {})));
    assert!(matches!(rx2.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    assert!(matches!(rx3.try_recv(), Err(mpsc::error::TryRecvError::Empty)), "another room's stream goes on");
}
