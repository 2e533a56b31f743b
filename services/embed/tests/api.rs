//! voice-embed over HTTP and gRPC with the real model: embeddings against the reference vectors,
//! every bad input the issue lists, the RAG routes end to end, gRPC, and backpressure.

use std::{path::PathBuf, sync::OnceLock};

use serde_json::{json, Value};
use voice_testkit::{assert_error, client, post_body, raw_request, Service, SharedServer};

static SVC: Service = Service::new(env!("CARGO_BIN_EXE_voice-embed"), "VOICE_EMBED");

fn server() -> &'static SharedServer {
    static ARGS: OnceLock<&'static [&'static str]> = OnceLock::new();
    let args = ARGS.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("voice-embed-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let dir: &'static str = Box::leak(d.display().to_string().into_boxed_str());
        Box::leak(vec!["--data-dir", dir].into_boxed_slice())
    });
    SVC.shared(args)
}

fn post(path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{}{path}", server().http)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn get(path: &str) -> (u16, Value) {
    let r = client().get(format!("{}{path}", server().http)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn delete(path: &str) -> (u16, Value) {
    let r = client().delete(format!("{}{path}", server().http)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn data(rel: &str) -> PathBuf {
    voice_testkit::repo_root().join(rel)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn corpus_docs() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("crates/rag/tests/data/corpus")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let id = p.file_stem().unwrap().to_str().unwrap();
            json!({"id": id, "text": std::fs::read_to_string(p).unwrap(), "metadata": {"topic": id, "n": i, "source": format!("{id}.md")}})
        })
        .collect()
}

#[test]
fn embeddings_match_the_reference_in_float_and_base64() {
    let reference: Value = serde_json::from_slice(&std::fs::read(data("crates/embeddings/tests/data/minilm-reference.json")).unwrap()).unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let (st, body) = post("/v1/embeddings", json!({"input": texts, "model": "all-minilm-l6-v2"}));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "all-minilm-l6-v2");
    let tokens: usize = sentences.iter().map(|s| s["input_ids"].as_array().unwrap().len()).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    for (i, (d, s)) in body["data"].as_array().unwrap().iter().zip(sentences).enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        assert!(cosine(&floats(&d["embedding"]), &floats(&s["embedding"])) > 1.0 - 1e-4);
    }
    // A single string, base64: little-endian f32, the same numbers.
    let (st, b64) = post("/v1/embeddings", json!({"input": texts[0], "encoding_format": "base64"}));
    assert_eq!(st, 200);
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let v: Vec<f64> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
    assert_eq!(v.len(), 384);
    let f = floats(&body["data"][0]["embedding"]);
    assert!(v.iter().zip(&f).all(|(a, b)| (a - b).abs() < 1e-6));
    // The model routes.
    let (st, models) = get("/v1/models");
    assert_eq!(st, 200);
    assert_eq!(models["data"][0]["id"], "all-minilm-l6-v2");
    assert_eq!(models["data"][0]["dimensions"], 384);
}

#[test]
fn bad_embedding_inputs_are_4xx_in_openai_shape() {
    let base = &server().http;
    let url = format!("{base}/v1/embeddings");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"input": ""}), 400, "empty"),
        (json!({"input": "   "}), 400, "empty"),
        (json!({"input": []}), 400, "empty array"),
        (json!({"input": ["ok", ""]}), 400, "input[1]"),
        (json!({}), 400, "input"),
        (json!({"input": [1, 2, 3]}), 400, "token-id"),
        (json!({"input": [["a"]]}), 400, "input[0]"),
        (json!({"input": "hi", "model": "text-embedding-3-small"}), 404, "text-embedding-3-small"),
        (json!({"input": "hi", "encoding_format": "int8"}), 400, "encoding_format"),
        (json!({"input": "hi", "dimensions": 1536}), 400, "dimensions"),
        (json!({"input": "hi", "bogus": 1}), 400, "bogus"),
        (json!({"input": vec!["x"; 10_000]}), 400, "limit is 2048"),
        (json!({"input": "word ".repeat(2000), "truncate": false}), 400, "at most 256"),
    ];
    for (body, status, needle) in cases {
        let r = voice_testkit::reply(client().post(&url).json(&body).send().unwrap());
        assert_error(&r, status, needle);
    }
    assert_error(&post_body(&url, "application/json", b"{\"input\": \"\xff\xfe\"}".to_vec()), 400, "UTF-8");
    assert_error(&post_body(&url, "application/json", "{not json"), 400, "invalid request body");
    // Over-long input is truncated by default: 200, same vector as its first 254 tokens.
    let (st, long) = post("/v1/embeddings", json!({"input": "word ".repeat(2000)}));
    assert_eq!(st, 200, "{long}");
    assert_eq!(long["usage"]["prompt_tokens"], 256);
}

#[test]
fn rag_end_to_end_over_http() {
    let docs = corpus_docs();
    let (st, body) = post("/v1/collections/handbooks/documents", json!({"documents": docs}));
    assert_eq!(st, 200, "{body}");
    let outcomes = body["documents"].as_array().unwrap();
    assert_eq!(outcomes.len(), 12);
    assert!(outcomes.iter().all(|o| o["status"] == "created" && o["chunks"].as_u64().unwrap() >= 2), "{body}");

    // Re-ingesting the same documents is a no-op.
    let (st, again) = post("/v1/collections/handbooks/documents", json!({"documents": docs}));
    assert_eq!(st, 200);
    assert!(again["documents"].as_array().unwrap().iter().all(|o| o["status"] == "unchanged"), "{again}");
    let (_, info) = get("/v1/collections/handbooks");
    assert_eq!(info["documents"], 12);
    let chunks_before = info["chunks"].as_u64().unwrap();

    // Search: the right document first, scores, sections, metadata.
    let (st, res) = post("/v1/collections/handbooks/search", json!({"query": "How long does the descaling program take?", "top_k": 3}));
    assert_eq!(st, 200, "{res}");
    let hits = res["data"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["doc_id"], "espresso-machine-manual");
    assert!(hits[0]["text"].as_str().unwrap().contains("25 minutes"), "{}", hits[0]["text"]);
    assert!(hits[0]["section"].as_str().unwrap().contains("Descaling"));
    assert!(hits.windows(2).all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()));

    // Filters and thresholds.
    let (_, f) = post(
        "/v1/collections/handbooks/search",
        json!({"query": "battery storage", "top_k": 10, "filter": {"topic": "bicycle-maintenance-checklist"}}),
    );
    assert!(f["data"].as_array().unwrap().iter().all(|h| h["doc_id"] == "bicycle-maintenance-checklist"), "{f}");
    let (_, f) = post("/v1/collections/handbooks/search", json!({"query": "battery", "top_k": 10, "filter": {"n": {"$gte": 10}}}));
    assert!(f["data"].as_array().unwrap().iter().all(|h| h["metadata"]["n"].as_u64().unwrap() >= 10), "{f}");
    let (_, t) = post("/v1/collections/handbooks/search", json!({"query": "battery", "top_k": 10, "score_threshold": 0.99}));
    assert!(t["data"].as_array().unwrap().is_empty(), "{t}");

    // Context: within the budget, numbered, with sources.
    let (st, ctx) =
        post("/v1/collections/handbooks/context", json!({"query": "What should I do right after burning my hand on the stove?", "max_tokens": 300}));
    assert_eq!(st, 200, "{ctx}");
    assert!(ctx["tokens"].as_u64().unwrap() <= 300);
    assert_eq!(ctx["passages"][0]["doc_id"], "first-aid-burns-cuts");
    assert_eq!(ctx["passages"][0]["source"], "first-aid-burns-cuts.md");
    assert!(ctx["context"].as_str().unwrap().starts_with("[1] (source: first-aid-burns-cuts.md)"));

    // Update one document: its chunks are replaced.
    let changed = json!({"documents": [{"id": "espresso-machine-manual", "text": "# Espresso\n\nThe Barista Pro 340 now descales in 12 minutes."}]});
    let (_, up) = post("/v1/collections/handbooks/documents", changed);
    assert_eq!(up["documents"][0]["status"], "updated");
    assert_eq!(up["documents"][0]["chunks"], 1);
    let (_, res) = post("/v1/collections/handbooks/search", json!({"query": "How long does descaling take?", "top_k": 1}));
    assert!(res["data"][0]["text"].as_str().unwrap().contains("12 minutes"), "{res}");
    let (_, info) = get("/v1/collections/handbooks");
    assert!(info["chunks"].as_u64().unwrap() < chunks_before);

    // Delete it.
    assert_eq!(delete("/v1/collections/handbooks/documents/espresso-machine-manual").0, 200);
    assert_eq!(delete("/v1/collections/handbooks/documents/espresso-machine-manual").0, 404);
    assert_eq!(get("/v1/collections/handbooks/documents/espresso-machine-manual").0, 404);
    let (_, list) = get("/v1/collections/handbooks/documents?limit=100");
    assert_eq!(list["data"].as_array().unwrap().len(), 11);

    // Metrics: batch sizes, tokens, search latency, index size.
    let base = &server().http;
    assert!(voice_testkit::metric(base, "voice_embed_batch_size_count", "") > 0.0);
    assert!(voice_testkit::metric(base, "voice_embed_tokens_total", "") > 1000.0);
    assert!(voice_testkit::metric(base, "voice_embed_search_seconds_count", "backend=\"embedded\",mode=\"hybrid\"") >= 3.0);
    assert_eq!(voice_testkit::metric(base, "voice_embed_index_documents", "collection=\"handbooks\""), 11.0);
}

#[test]
fn bad_rag_inputs_are_4xx() {
    let base = server().http.clone();
    let ingest = format!("{base}/v1/collections/bad-inputs/documents");
    let send = |url: &str, body: Value| voice_testkit::reply(client().post(url).json(&body).send().unwrap());
    // Unknown collection.
    assert_error(&send(&format!("{base}/v1/collections/nope/search"), json!({"query": "x"})), 404, "nope");
    assert_error(&send(&format!("{base}/v1/collections/nope/context"), json!({"query": "x"})), 404, "nope");
    assert_eq!(get("/v1/collections/nope").0, 404);
    assert_eq!(delete("/v1/collections/nope").0, 404);
    assert_eq!(delete("/v1/collections/nope/documents/x").0, 404);
    assert_error(
        &send(&format!("{base}/v1/collections/bad%20name/documents"), json!({"documents": [{"id": "a", "text": "t"}]})),
        400,
        "collection name",
    );
    // Documents.
    assert_error(&send(&ingest, json!({"documents": []})), 400, "at least one");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "one"}, {"id": "a", "text": "two"}]})), 400, "more than once");
    assert_error(&send(&ingest, json!({"documents": [{"id": "", "text": "x"}]})), 400, "1 to 256");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a\u{0007}", "text": "x"}]})), 400, "control");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "  \n "}]})), 400, "no text");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "x", "metadata": [1]}]})), 400, "metadata");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "x", "format": "pdf"}]})), 415, "PDF");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "x", "format": "docx"}]})), 400, "docx");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "x"}], "chunk_tokens": 5000})), 400, "chunk_tokens");
    assert_error(&send(&ingest, json!({"documents": [{"id": "a", "text": "x"}], "chunk_tokens": 100, "chunk_overlap": 80})), 400, "chunk_overlap");
    assert_error(&post_body(&ingest, "application/json", b"{\"documents\": [{\"id\": \"a\", \"text\": \"\xc3\x28\"}]}".to_vec()), 400, "UTF-8");
    // A 50 MB document: refused by size before it is read.
    let (status, body) = raw_request(
        &base,
        "POST /v1/collections/bad-inputs/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n",
        b"{\"documents\": [{\"id\": \"big\", \"text\": \"aaaa",
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("exceeds the limit"), "{body}");
    // Search parameters.
    let ok = send(&ingest, json!({"documents": [{"id": "a", "text": "Trains leave at nine."}]}));
    assert_eq!(ok.0, 200, "{}", ok.2);
    let search = format!("{base}/v1/collections/bad-inputs/search");
    for (body, needle) in [
        (json!({"query": ""}), "query"),
        (json!({"query": "x", "top_k": 0}), "top_k"),
        (json!({"query": "x", "top_k": 1000}), "top_k"),
        (json!({"query": "x", "mode": "fuzzy"}), "mode"),
        (json!({"query": "x", "alpha": 2}), "alpha"),
        (json!({"query": "x", "filter": [1]}), "malformed filter"),
        (json!({"query": "x", "filter": {"a": {"$regex": "x"}}}), "unknown operator"),
        (json!({"query": "x", "filter": {"a": {"$gt": "x"}}}), "number"),
        (json!({"query": "x", "filter": {"$or": []}}), "at least one"),
    ] {
        assert_error(&send(&search, body), 400, needle);
    }
    let (st, hits) = post("/v1/collections/bad-inputs/search", json!({"query": "When do the trains leave?"}));
    assert_eq!(st, 200);
    assert_eq!(hits["data"][0]["doc_id"], "a");
}

#[test]
fn grpc_embed_ingest_search_context() {
    use voice_proto::embed::v1::{embeddings_client::EmbeddingsClient, ContextRequest, Document, EmbedRequest, IngestRequest, SearchRequest};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = EmbeddingsClient::connect(server().grpc.clone()).await.unwrap();
        let r = c.embed(EmbedRequest { input: vec!["hello there".into(), "general kenobi".into()], no_truncate: false }).await.unwrap().into_inner();
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data[0].values.len(), 384);
        let docs = vec![
            Document {
                id: "trains".into(),
                text: "# Timetable\n\nThe last train to Oxford leaves at 23:40 from platform 4.".into(),
                format: String::new(),
                metadata_json: r#"{"kind":"travel"}"#.into(),
            },
            Document {
                id: "pasta".into(),
                text: "Boil the pasta for nine minutes in salted water.".into(),
                format: "text".into(),
                metadata_json: String::new(),
            },
        ];
        let ing =
            c.ingest(IngestRequest { collection: "grpc".into(), documents: docs, chunk_tokens: 0, chunk_overlap: 0 }).await.unwrap().into_inner();
        assert_eq!(ing.documents.len(), 2);
        assert!(ing.documents.iter().all(|d| d.status == "created" && d.chunks == 1));
        let s = c
            .search(SearchRequest {
                collection: "grpc".into(),
                query: "when is the final train to Oxford".into(),
                top_k: 2,
                score_threshold: None,
                filter_json: String::new(),
                mode: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.hits[0].doc_id, "trains");
        assert_eq!(serde_json::from_str::<Value>(&s.hits[0].metadata_json).unwrap()["kind"], "travel");
        let ctx = c
            .context(ContextRequest {
                collection: "grpc".into(),
                query: "pasta cooking time".into(),
                max_tokens: 100,
                top_k: 0,
                filter_json: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ctx.passages[0].doc_id, "pasta");
        assert!(ctx.tokens <= 100 && ctx.context.contains("nine minutes"));
        // Errors map to gRPC codes.
        let e = c
            .search(SearchRequest {
                collection: "missing".into(),
                query: "x".into(),
                top_k: 1,
                score_threshold: None,
                filter_json: String::new(),
                mode: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = c
            .search(SearchRequest {
                collection: "grpc".into(),
                query: "x".into(),
                top_k: 1,
                score_threshold: None,
                filter_json: "{oops".into(),
                mode: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = c.embed(EmbedRequest { input: vec![], no_truncate: false }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    });
}
