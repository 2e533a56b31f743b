//! The gRPC contract `voice.stt.v1.SpeechToText` through a real tonic client: unary Transcribe,
//! streaming recognition with partial and final transcripts, and contract errors.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use voice_proto::stt::v1::{self as pb, speech_to_text_client::SpeechToTextClient, streaming_recognize_request::Request as Req};

const ARGS: &[&str] = &["--model", "whisper-tiny.en", "--max-concurrency", "2"];

async fn client() -> SpeechToTextClient<tonic::transport::Channel> {
    SpeechToTextClient::connect(shared(ARGS).grpc.clone()).await.unwrap()
}

#[tokio::test]
async fn unary_transcribe_with_segments() {
    let mut c = client().await;
    let r = c.transcribe(pb::TranscribeRequest { audio: jfk_bytes(), timestamps: true, ..Default::default() }).await.unwrap().into_inner();
    assert_jfk(&r.text);
    assert_eq!(r.model, "whisper-tiny.en");
    assert_eq!(r.language, "en");
    assert!((r.duration - 11.0).abs() < 0.1);
    assert!(!r.segments.is_empty() && r.segments.iter().all(|s| s.end > s.start));

    let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner();
    assert_eq!(models.models[0].id, "whisper-tiny.en");
    assert_eq!(models.models[0].device, "cpu");
}

#[tokio::test]
async fn unary_errors_are_statuses() {
    let mut c = client().await;
    let e = c.transcribe(pb::TranscribeRequest { audio: vec![1, 2, 3], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = c.transcribe(pb::TranscribeRequest { audio: jfk_bytes(), model: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
}

/// Stream JFK as 100 ms chunks of 48 kHz s16 PCM at twice real time, with interim results; end the
/// utterance, then stream a second utterance (the first half of JFK) and close the stream.
#[tokio::test]
async fn streaming_partials_then_finals() {
    let mut c = client().await;
    let pcm16k = jfk_pcm();
    let pcm48k = voice_runtime::audio::resample(&pcm16k, 16_000, 48_000).unwrap();
    let to_s16 = |s: &[f32]| s.iter().flat_map(|x| ((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect::<Vec<u8>>();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let first_half = pcm48k[..pcm48k.len() / 2].to_vec();
    tokio::spawn(async move {
        let cfg = pb::StreamingConfig {
            sample_rate: 48_000,
            encoding: pb::AudioEncoding::PcmS16le as i32,
            interim_results: true,
            partial_interval_ms: 1000,
            ..Default::default()
        };
        tx.send(pb::StreamingRecognizeRequest { request: Some(Req::Config(cfg)) }).await.unwrap();
        for chunk in pcm48k.chunks(4800) {
            tx.send(pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: to_s16(chunk) })) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.send(pb::StreamingRecognizeRequest { request: Some(Req::EndOfUtterance(pb::EndOfUtterance::default())) }).await.unwrap();
        for chunk in first_half.chunks(4800) {
            tx.send(pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: to_s16(chunk) })) }).await.unwrap();
        }
        // Dropping the sender ends the stream: the server finalises the second utterance.
    });
    let mut responses = c.streaming_recognize(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut partials = Vec::new();
    let mut finals = Vec::new();
    while let Some(r) = responses.next().await {
        let r = r.unwrap();
        if r.is_final {
            finals.push(r);
        } else {
            partials.push(r);
        }
    }
    assert_eq!(finals.len(), 2, "finals: {finals:?}");
    assert_eq!(finals[0].utterance, 0);
    assert_jfk(&finals[0].text);
    assert!((finals[0].audio_seconds - 11.0).abs() < 0.1);
    assert_eq!(finals[1].utterance, 1);
    let t = voice_whisper::eval::normalize(&finals[1].text);
    assert!(t.starts_with("and so my fellow americans"), "second utterance: {t}");
    // Partials arrive while audio streams, cover growing audio, and make sense.
    assert!(!partials.is_empty(), "no partial transcripts");
    assert!(partials.iter().all(|p| p.utterance == 0 || p.utterance == 1));
    let last0 = partials.iter().rfind(|p| p.utterance == 0).expect("partials for utterance 0");
    assert!(voice_whisper::eval::normalize(&last0.text).starts_with("and so"), "partial: {}", last0.text);
}

#[tokio::test]
async fn streaming_contract_errors() {
    let mut c = client().await;
    // Audio before config.
    let first = pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: vec![0; 320] })) };
    let e = c.streaming_recognize(tokio_stream::iter(vec![first])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Unsupported sample rate.
    let cfg = pb::StreamingRecognizeRequest { request: Some(Req::Config(pb::StreamingConfig { sample_rate: 3, ..Default::default() })) };
    let e = c.streaming_recognize(tokio_stream::iter(vec![cfg])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

/// FinalCandidate: the transcript started there is the final when EndOfUtterance keeps it
/// (audio sent after the candidate is left out: here the first half of JFK again, which the
/// final must not contain), and is dropped when it does not (the speaker went on: the final
/// covers all the audio).
#[tokio::test]
async fn streaming_final_candidate_kept_or_dropped() {
    let mut c = client().await;
    let pcm = jfk_pcm();
    let to_s16 = |s: &[f32]| s.iter().flat_map(|x| ((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect::<Vec<u8>>();
    let audio = |s: &[f32]| pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: to_s16(s) })) };
    let candidate = || pb::StreamingRecognizeRequest { request: Some(Req::FinalCandidate(pb::FinalCandidate {})) };
    let end = |keep_candidate| pb::StreamingRecognizeRequest { request: Some(Req::EndOfUtterance(pb::EndOfUtterance { keep_candidate })) };
    let cfg = pb::StreamingRecognizeRequest {
        request: Some(Req::Config(pb::StreamingConfig { sample_rate: 16_000, interim_results: true, ..Default::default() })),
    };
    let half = pcm.len() / 2;
    let msgs = vec![
        cfg,
        // Utterance 0: all of JFK, the candidate, more speech, kept anyway (the client says no
        // speech came after: the extra audio must not be in the final).
        audio(&pcm),
        candidate(),
        audio(&pcm[..half]),
        end(true),
        // Utterance 1: half of JFK, a candidate, the rest (the speaker went on), not kept.
        audio(&pcm[..half]),
        candidate(),
        audio(&pcm[half..]),
        end(false),
    ];
    let mut responses = c.streaming_recognize(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    let mut finals = Vec::new();
    while let Some(r) = responses.next().await {
        let r = r.unwrap();
        if r.is_final {
            finals.push(r);
        }
    }
    assert_eq!(finals.len(), 2, "finals: {finals:?}");
    assert_jfk(&finals[0].text);
    assert!((finals[0].audio_seconds - 11.0).abs() < 0.1, "the kept candidate covers the audio before it: {}", finals[0].audio_seconds);
    assert_eq!(finals[1].utterance, 1);
    assert_jfk(&finals[1].text);
    assert!((finals[1].audio_seconds - 11.0).abs() < 0.1, "{}", finals[1].audio_seconds);
}

/// HoldPartials (the client is deciding whether the speaker finished) cancels the partial in
/// progress and the next one waits a whole interval of new audio; the same stream without it
/// gets the partial.
#[tokio::test]
async fn hold_partials_cancels_the_running_partial() {
    let pcm = jfk_pcm();
    let to_s16 = |s: &[f32]| s.iter().flat_map(|x| ((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect::<Vec<u8>>();
    for hold in [true, false] {
        let mut c = client().await;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let audio = |s: &[f32]| pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: to_s16(s) })) };
        let cfg = pb::StreamingConfig { sample_rate: 16_000, interim_results: true, partial_interval_ms: 1000, ..Default::default() };
        tx.send(pb::StreamingRecognizeRequest { request: Some(Req::Config(cfg)) }).await.unwrap();
        let mut responses = c.streaming_recognize(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        // 2.5 s of speech: one partial starts on arrival (a slot is free).
        tx.send(audio(&pcm[..40_000])).await.unwrap();
        if hold {
            tx.send(pb::StreamingRecognizeRequest { request: Some(Req::HoldPartials(pb::HoldPartials {})) }).await.unwrap();
        }
        // Time for that partial to finish had it not been cancelled; then 0.5 s more audio (less
        // than an interval: no new partial after a hold).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tx.send(audio(&pcm[40_000..48_000])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(pb::StreamingRecognizeRequest { request: Some(Req::EndOfUtterance(pb::EndOfUtterance { keep_candidate: false })) }).await.unwrap();
        drop(tx);
        let (mut partials, mut finals) = (0, Vec::new());
        while let Some(r) = responses.next().await {
            let r = r.unwrap();
            if r.is_final {
                finals.push(r.text);
            } else {
                partials += 1;
            }
        }
        assert_eq!(finals.len(), 1, "hold {hold}: {finals:?}");
        assert!(finals[0].to_lowercase().contains("americans"), "hold {hold}: {finals:?}");
        if hold {
            assert_eq!(partials, 0, "a partial arrived after HoldPartials");
        } else {
            assert!(partials >= 1, "no partial without the hold: the test proves nothing");
        }
    }
}

/// `--stream-window fit` (the default): a short utterance's final is made on an encoder window
/// of its own length plus 1.5 s, and says so; 11 s of JFK is past the 4 s limit and uses
/// Whisper's 30 s window. Both transcripts are right.
#[tokio::test]
async fn short_utterances_use_a_fitted_encoder_window() {
    let cards = voice_whisper::eval::cards_set().expect("pocketsphinx-testdata's cards (apt-get install pocketsphinx-testdata)");
    let card = cards.iter().find(|u| u.name == "005").expect("cards/005.wav");
    let short = voice_runtime::audio::decode_to_rate(&std::fs::read(&card.wav).unwrap(), 16_000, 60.0).unwrap().samples;
    let to_s16 = |s: &[f32]| s.iter().flat_map(|x| ((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect::<Vec<u8>>();
    let audio = |s: &[f32]| pb::StreamingRecognizeRequest { request: Some(Req::Audio(pb::AudioChunk { pcm: to_s16(s) })) };
    let end = || pb::StreamingRecognizeRequest { request: Some(Req::EndOfUtterance(pb::EndOfUtterance::default())) };
    let cfg = pb::StreamingRecognizeRequest { request: Some(Req::Config(pb::StreamingConfig { sample_rate: 16_000, ..Default::default() })) };
    let msgs = vec![cfg, audio(&short), end(), audio(&jfk_pcm()), end()];
    let mut responses = client().await.streaming_recognize(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    let mut finals = Vec::new();
    while let Some(r) = responses.next().await {
        finals.push(r.unwrap());
    }
    assert_eq!(finals.len(), 2, "{finals:?}");
    let seconds = short.len() as f64 / 16_000.0;
    assert!((finals[0].window_seconds - (seconds + 1.5)).abs() < 0.05, "{seconds:.2} s of audio, window {} s", finals[0].window_seconds);
    // "eight of spades four of clubs seven of hearts": tiny.en hears "close" for "clubs" on either window.
    let (errors, words) = voice_whisper::eval::word_errors(&card.reference, &finals[0].text);
    assert!(errors <= 1, "{errors}/{words} errors: {}", finals[0].text);
    assert_eq!(finals[1].window_seconds, 30.0);
    assert_jfk(&finals[1].text);
}
