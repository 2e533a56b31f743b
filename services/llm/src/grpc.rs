//! gRPC `voice.llm.v1.TextGeneration`: server-streamed text deltas for the voice agent.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};
use voice_proto::llm::v1::{self as pb, text_generation_server::TextGeneration};
use voice_runtime::ApiError;
use voice_textgen::Event;

use crate::{
    engine::Prompt,
    request::{chat_messages, sampling_params, ContentField, InMessage, Sampling, StopField},
    AppState,
};

pub struct LlmGrpc {
    pub state: AppState,
}

type GenStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TextGeneration for LlmGrpc {
    type GenerateStream = GenStream;

    async fn generate(&self, req: Request<pb::GenerateRequest>) -> Result<Response<Self::GenerateStream>, Status> {
        let engine = self.state.engine()?;
        let r = req.into_inner();
        engine.check_model(Some(&r.model))?;
        let sampling = Sampling {
            max_tokens: (r.max_tokens > 0).then_some(r.max_tokens as i64),
            max_completion_tokens: None,
            temperature: Some(r.temperature as f64),
            top_p: Some(if r.top_p <= 0.0 { 1.0 } else { r.top_p as f64 }),
            top_k: Some(r.top_k as i64),
            seed: r.seed.map(|s| s as i64),
            stop: (!r.stop.is_empty()).then(|| StopField::Many(r.stop.clone())),
            frequency_penalty: Some(r.frequency_penalty as f64),
            presence_penalty: Some(r.presence_penalty as f64),
            repeat_penalty: Some(if r.repeat_penalty <= 0.0 { 1.0 } else { r.repeat_penalty as f64 }),
            n: None,
        };
        let explicit = r.max_tokens > 0;
        let params = sampling_params(&sampling, engine.default_max_tokens)?;
        let prompt = if r.messages.is_empty() {
            if r.prompt.is_empty() {
                return Err(ApiError::bad_request("give messages or a prompt").into());
            }
            Prompt::Text(r.prompt)
        } else {
            let msgs: Vec<InMessage> =
                r.messages.into_iter().map(|m| InMessage { role: m.role, content: Some(ContentField::Text(m.content)) }).collect();
            let msgs = chat_messages(&msgs, engine.default_system_prompt.as_deref())?;
            if r.prefill_only {
                Prompt::ChatPrefix(msgs)
            } else {
                Prompt::Chat(msgs)
            }
        };
        let tokens = engine.prompt_tokens(prompt).await?;
        let handle = if r.prefill_only { engine.prefill(tokens)? } else { engine.submit(tokens, params, explicit)? };
        // The handle lives in the stream: a client that goes away cancels the generation.
        let stream = futures::stream::unfold(Some(handle), |h| async move {
            let mut h = h?;
            match h.events.recv().await {
                Some(Event::Text(text)) => Some((Ok(pb::GenerateResponse { text, ..Default::default() }), Some(h))),
                Some(Event::Done { reason, usage, time_to_first_token }) => Some((
                    Ok(pb::GenerateResponse {
                        done: true,
                        finish_reason: serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                        prompt_tokens: usage.prompt_tokens as u32,
                        completion_tokens: usage.completion_tokens as u32,
                        cached_prompt_tokens: usage.cached_tokens as u32,
                        time_to_first_token_ms: time_to_first_token.map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
                        ..Default::default()
                    }),
                    None,
                )),
                Some(Event::Error(e)) => Some((Err(Status::internal(format!("generation failed: {e}"))), None)),
                None => None,
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_models(&self, _req: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        let e = self.state.engine()?;
        let info = &e.engine.model.info;
        Ok(Response::new(pb::ListModelsResponse {
            models: vec![pb::ModelInfo {
                id: e.model_id.clone(),
                architecture: info.architecture.clone(),
                context_length: info.context_length as u32,
                device: self.state.ctx.device_state.status().device,
            }],
        }))
    }
}
