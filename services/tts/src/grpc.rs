//! gRPC `voice.tts.v1.TextToSpeech`: server-streamed 24 kHz PCM for the voice agent. A client
//! that cancels the call (barge-in) closes the channel and synthesis stops at the next chunk.

use std::{pin::Pin, time::Instant};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use voice_kokoro::SAMPLE_RATE;
use voice_proto::tts::v1::{self as pb, text_to_speech_server::TextToSpeech};

use crate::{engine::voice_language, AppState};

pub struct TtsGrpc {
    pub state: AppState,
}

type AudioStream = Pin<Box<dyn Stream<Item = Result<pb::AudioChunk, Status>> + Send>>;

#[tonic::async_trait]
impl TextToSpeech for TtsGrpc {
    type SynthesizeStream = AudioStream;

    async fn synthesize(&self, req: Request<pb::SynthesizeRequest>) -> Result<Response<Self::SynthesizeStream>, Status> {
        let started = Instant::now();
        let engine = self.state.engine()?;
        let r = req.into_inner();
        engine.check_model(Some(&r.model))?;
        let speed = (r.speed != 0.0).then_some(r.speed);
        let plan_engine = engine.clone();
        let plan = tokio::task::spawn_blocking(move || plan_engine.plan(&r.text, Some(&r.voice), speed))
            .await
            .map_err(|e| Status::internal(format!("text front end task failed: {e}")))??;
        let (tx, rx) = mpsc::channel(4);
        engine.synthesize(plan, started, tx).await?;
        let mut next_index = 0u32;
        let pieces = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| match item {
            Ok(p) => Ok(pb::AudioChunk {
                pcm: voice_runtime::audio::f32_to_s16le(&p.samples),
                sample_rate: SAMPLE_RATE,
                index: {
                    next_index += 1;
                    next_index - 1
                },
                piece: p.index as u32,
                text: p.text,
                done: false,
                time_to_first_audio_ms: p.time_to_first_audio.map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
            }),
            Err(e) => Err(e.to_status()),
        });
        // Closing message, after the last piece (not sent when the stream ended in an error).
        let done = futures::stream::once(async { Ok(pb::AudioChunk { sample_rate: SAMPLE_RATE, done: true, ..Default::default() }) });
        let mut failed = false;
        let stream = pieces.chain(done).take_while(move |item| {
            let keep = !failed;
            if item.is_err() {
                failed = true;
            }
            futures::future::ready(keep)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_voices(&self, _req: Request<pb::ListVoicesRequest>) -> Result<Response<pb::ListVoicesResponse>, Status> {
        let engine = self.state.engine()?;
        let voices = engine
            .voices
            .ids()
            .map(|id| pb::Voice {
                id: id.to_string(),
                language: voice_language(id).to_string(),
                gender: match id.chars().nth(1) {
                    Some('f') => "f".into(),
                    Some('m') => "m".into(),
                    _ => String::new(),
                },
            })
            .collect();
        Ok(Response::new(pb::ListVoicesResponse { voices, default_voice: engine.default_voice.clone() }))
    }
}
