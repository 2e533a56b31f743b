//! HTTP API.
//!
//! OpenAI-compatible:
//! - `POST /v1/embeddings` (input: string or array of strings; encoding_format float | base64)
//! - `GET /v1/models`, `GET /v1/models/{id}`
//!
//! Retrieval (this service's own):
//! - `GET /v1/collections`, `POST /v1/collections` `{name}`, `GET|DELETE /v1/collections/{name}`
//! - `POST /v1/collections/{name}/documents` (ingest; creates the collection), `GET` (list)
//! - `GET|DELETE /v1/collections/{name}/documents/{id}`
//! - `POST /v1/collections/{name}/search`, `POST /v1/collections/{name}/context`

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    routing::{get, post},
    Json, Router,
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use voice_runtime::{error::parse_json, ApiError};

use crate::{
    core::{store_error, RawDocument, SearchRequest},
    AppState,
};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/collections", get(list_collections).post(create_collection))
        .route("/v1/collections/{name}", get(get_collection).delete(delete_collection))
        .route("/v1/collections/{name}/documents", post(ingest).get(list_documents))
        .route("/v1/collections/{name}/documents/{id}", get(get_document).delete(delete_document))
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/collections/{name}/context", post(context))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputField {
    One(String),
    Many(Vec<Value>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: Option<InputField>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<i64>,
    #[serde(default)]
    user: Option<String>,
    /// Extension: false refuses over-long inputs instead of cutting them.
    #[serde(default)]
    truncate: Option<bool>,
}

async fn embeddings(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let req: EmbeddingsRequest = parse_json(&body)?;
    let _ = req.user;
    core.check_model(req.model.as_deref())?;
    let texts: Vec<String> = match req.input {
        None => return Err(ApiError::bad_request("`input` is required").with_param("input")),
        Some(InputField::One(s)) => vec![s],
        Some(InputField::Many(items)) => {
            if items.len() > st.args.max_inputs {
                return Err(ApiError::bad_request(format!(
                    "{} inputs in one request; the limit is {} (--max-inputs)",
                    items.len(),
                    st.args.max_inputs
                ))
                .with_param("input"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    Value::Array(_) | Value::Number(_) => {
                        Err(ApiError::bad_request(format!("input[{i}]: token-id inputs are not supported; send text")).with_param("input"))
                    }
                    _ => Err(ApiError::bad_request(format!("input[{i}] must be a string")).with_param("input")),
                })
                .collect::<Result<_, _>>()?
        }
    };
    if texts.is_empty() {
        return Err(ApiError::bad_request("`input` must not be an empty array").with_param("input"));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::bad_request(format!("input[{i}] is empty")).with_param("input"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => return Err(ApiError::bad_request(format!("encoding_format `{f}`: use float or base64")).with_param("encoding_format")),
    };
    if let Some(d) = req.dimensions {
        if d != core.dimensions() as i64 {
            return Err(ApiError::bad_request(format!(
                "{} embeds {} dimensions; `dimensions` {d} is not available",
                core.model_id,
                core.dimensions()
            ))
            .with_param("dimensions"));
        }
    }
    let enc = core.encode(texts, req.truncate.unwrap_or(true)).await?;
    let tokens: usize = enc.iter().map(|e| e.ids.len()).sum();
    let vectors = core.embed_encoded(enc).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": core.model_id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})))
}

fn model_json(st: &AppState) -> Result<Value, ApiError> {
    let core = st.core()?;
    let e = core.embedder();
    Ok(json!({"id": core.model_id, "object": "model", "owned_by": "voice-ai", "dimensions": e.dimensions, "max_input_tokens": e.max_seq_len,
              "pooling": format!("{:?}", e.pooling).to_lowercase()}))
}

async fn list_models(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"object": "list", "data": [model_json(&st)?]})))
}

async fn get_model(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    st.core()?.check_model(Some(&id))?;
    Ok(Json(model_json(&st)?))
}

async fn list_collections(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let cols = core.store()?.list_collections().await.map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": cols, "backend": core.store()?.backend()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCollection {
    name: String,
}

async fn create_collection(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let req: CreateCollection = parse_json(&body)?;
    let info = core.store()?.create_collection(&req.name, core.dimensions(), &core.model_id).await.map_err(store_error)?;
    Ok(Json(json!(info)))
}

async fn get_collection(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    Ok(Json(json!(core.store()?.collection(&name).await.map_err(store_error)?)))
}

async fn delete_collection(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    core.store()?.delete_collection(&name).await.map_err(store_error)?;
    core.metrics.index_documents.with_label_values(&[&name]).set(0);
    core.metrics.index_chunks.with_label_values(&[&name]).set(0);
    Ok(Json(json!({"name": name, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentIn {
    id: String,
    text: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    documents: Vec<DocumentIn>,
    #[serde(default)]
    chunk_tokens: Option<i64>,
    #[serde(default)]
    chunk_overlap: Option<i64>,
}

async fn ingest(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let req: IngestRequest = parse_json(&body)?;
    let docs = req.documents.into_iter().map(|d| RawDocument { id: d.id, text: d.text, format: d.format, metadata: d.metadata }).collect();
    let outcomes = core.ingest(&name, docs, req.chunk_tokens, req.chunk_overlap, st.args.max_documents).await?;
    Ok(Json(json!({"collection": name, "documents": outcomes})))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_documents(State(st): State<AppState>, Path(name): Path<String>, Query(page): Query<Page>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let docs = core.store()?.list_documents(&name, page.offset.unwrap_or(0), limit).await.map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": docs})))
}

fn no_document(id: &str) -> ApiError {
    ApiError::not_found(format!("document `{id}` does not exist")).with_code("document_not_found")
}

async fn get_document(State(st): State<AppState>, Path((name, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let doc = core.store()?.document(&name, &id).await.map_err(store_error)?.ok_or_else(|| no_document(&id))?;
    Ok(Json(json!(doc)))
}

async fn delete_document(State(st): State<AppState>, Path((name, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    if !core.store()?.delete_document(&name, &id).await.map_err(store_error)? {
        return Err(no_document(&id));
    }
    core.refresh_index_gauges().await;
    Ok(Json(json!({"id": id, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    score_threshold: Option<f64>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    alpha: Option<f64>,
    /// Context only.
    #[serde(default)]
    max_tokens: Option<i64>,
}

impl SearchBody {
    fn split(self) -> (SearchRequest, Option<i64>) {
        (
            SearchRequest {
                query: self.query,
                top_k: self.top_k,
                score_threshold: self.score_threshold,
                filter: self.filter,
                mode: self.mode,
                alpha: self.alpha,
            },
            self.max_tokens,
        )
    }
}

async fn search(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let (req, max_tokens) = parse_json::<SearchBody>(&body)?.split();
    if max_tokens.is_some() {
        return Err(ApiError::bad_request("max_tokens belongs to /context, not /search").with_param("max_tokens"));
    }
    let hits = core.search(&name, req).await?;
    Ok(Json(json!({"object": "list", "collection": name, "data": hits})))
}

async fn context(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let core = st.core()?;
    let (req, max_tokens) = parse_json::<SearchBody>(&body)?.split();
    let ctx = core.context(&name, req, max_tokens).await?;
    Ok(Json(json!(ctx)))
}
