//! gRPC `voice.embed.v1.Embeddings` for the agent: the same core as HTTP, protobuf in and out.

use serde_json::Value;
use tonic::{Request, Response, Status};
use voice_proto::embed::v1::{self as pb, embeddings_server::Embeddings};
use voice_runtime::ApiError;

use crate::{
    core::{RawDocument, SearchRequest},
    AppState,
};

pub struct EmbedGrpc {
    pub state: AppState,
}

fn json_field(name: &str, s: &str) -> Result<Option<Value>, Status> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(s).map(Some).map_err(|e| Status::invalid_argument(format!("{name} is not JSON: {e}")))
}

fn opt_u32(v: u32) -> Option<i64> {
    (v > 0).then_some(v as i64)
}

fn st(e: ApiError) -> Status {
    e.to_status()
}

#[tonic::async_trait]
impl Embeddings for EmbedGrpc {
    async fn embed(&self, request: Request<pb::EmbedRequest>) -> Result<Response<pb::EmbedResponse>, Status> {
        let core = self.state.core().map_err(st)?;
        let req = request.into_inner();
        if req.input.is_empty() {
            return Err(Status::invalid_argument("input must hold at least one text"));
        }
        if req.input.len() > self.state.args.max_inputs {
            return Err(Status::invalid_argument(format!("{} inputs; the limit is {}", req.input.len(), self.state.args.max_inputs)));
        }
        if let Some(i) = req.input.iter().position(|t| t.trim().is_empty()) {
            return Err(Status::invalid_argument(format!("input[{i}] is empty")));
        }
        let enc = core.encode(req.input, !req.no_truncate).await.map_err(st)?;
        let meta: Vec<(u32, bool)> = enc.iter().map(|e| (e.ids.len() as u32, e.truncated())).collect();
        let vectors = core.embed_encoded(enc).await.map_err(st)?;
        let total_tokens = meta.iter().map(|m| m.0).sum();
        let data = vectors.into_iter().zip(meta).map(|(values, (tokens, truncated))| pb::Embedding { values, tokens, truncated }).collect();
        Ok(Response::new(pb::EmbedResponse { model: core.model_id.clone(), data, total_tokens }))
    }

    async fn ingest(&self, request: Request<pb::IngestRequest>) -> Result<Response<pb::IngestResponse>, Status> {
        let core = self.state.core().map_err(st)?;
        let req = request.into_inner();
        let mut docs = Vec::with_capacity(req.documents.len());
        for d in req.documents {
            docs.push(RawDocument {
                id: d.id,
                text: d.text,
                format: (!d.format.is_empty()).then_some(d.format),
                metadata: json_field("metadata_json", &d.metadata_json)?,
            });
        }
        // 0 means "the service default" for both chunk settings (proto3 has no unset integers).
        let outcomes = core
            .ingest(&req.collection, docs, opt_u32(req.chunk_tokens), opt_u32(req.chunk_overlap), self.state.args.max_documents)
            .await
            .map_err(st)?;
        Ok(Response::new(pb::IngestResponse {
            documents: outcomes.into_iter().map(|o| pb::IngestResult { id: o.id, status: o.status.to_string(), chunks: o.chunks }).collect(),
        }))
    }

    async fn search(&self, request: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let core = self.state.core().map_err(st)?;
        let req = request.into_inner();
        let hits = core
            .search(
                &req.collection,
                SearchRequest {
                    query: req.query,
                    top_k: opt_u32(req.top_k),
                    score_threshold: req.score_threshold,
                    filter: json_field("filter_json", &req.filter_json)?,
                    mode: (!req.mode.is_empty()).then_some(req.mode),
                    alpha: None,
                },
            )
            .await
            .map_err(st)?;
        Ok(Response::new(pb::SearchResponse {
            hits: hits
                .into_iter()
                .map(|h| pb::Hit {
                    doc_id: h.doc_id,
                    chunk_index: h.chunk_index,
                    text: h.text,
                    section: h.section,
                    metadata_json: Value::Object(h.metadata).to_string(),
                    score: h.score,
                })
                .collect(),
        }))
    }

    async fn context(&self, request: Request<pb::ContextRequest>) -> Result<Response<pb::ContextResponse>, Status> {
        let core = self.state.core().map_err(st)?;
        let req = request.into_inner();
        let ctx = core
            .context(
                &req.collection,
                SearchRequest {
                    query: req.query,
                    top_k: opt_u32(req.top_k),
                    score_threshold: None,
                    filter: json_field("filter_json", &req.filter_json)?,
                    mode: None,
                    alpha: None,
                },
                opt_u32(req.max_tokens),
            )
            .await
            .map_err(st)?;
        Ok(Response::new(pb::ContextResponse {
            context: ctx.context,
            tokens: ctx.tokens as u32,
            passages: ctx
                .passages
                .into_iter()
                .map(|p| pb::Passage {
                    marker: p.marker as u32,
                    doc_id: p.doc_id,
                    chunk_index: p.chunk_index,
                    source: p.source,
                    text: p.text,
                    score: p.score,
                })
                .collect(),
        }))
    }
}
