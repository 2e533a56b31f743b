//! Retrieval quality and backend parity on a corpus written for this test
//! (`tests/data/corpus/*.md`, 12 documents) with 36 spoken-style questions
//! (`tests/data/questions.json`), real all-MiniLM-L6-v2 embeddings, and both stores: embedded
//! (redb) and a real PostgreSQL 18 + pgvector server on loopback.

use std::{path::PathBuf, sync::Arc};

use candle_core::Device;
use serde_json::{json, Map, Value};
use voice_embeddings::Embedder;
use voice_rag::{
    chunk::{ChunkConfig, Format, TokenCounter},
    ingest::{self, DocumentInput},
    search::{self, SearchParams},
    store::{ChunkWrite, DocumentInfo, DocumentWrite, Store},
    EmbeddedStore, Filter, PostgresStore,
};

struct Counter(Arc<Embedder>);
impl TokenCounter for Counter {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

fn embedder() -> Arc<Embedder> {
    let dir = voice_models::Fetcher::new(None).resolve("all-minilm-l6-v2", true, &[]).expect("fetching all-minilm-l6-v2").dir;
    Arc::new(Embedder::load(&dir, &Device::Cpu).unwrap())
}

fn embed(e: &Embedder, texts: &[&str]) -> Vec<Vec<f32>> {
    let enc = e.encode(texts).unwrap();
    let mut out = Vec::new();
    for batch in enc.chunks(16) {
        out.extend(e.embed(&batch.iter().collect::<Vec<_>>()).unwrap());
    }
    out
}

fn data_dir() -> PathBuf {
    voice_testkit::repo_root().join("crates/rag/tests/data")
}

/// The corpus as documents: metadata `topic` = file stem, `kind` alternating so filters have something to bite.
fn corpus() -> Vec<DocumentInput> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("corpus")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let id = p.file_stem().unwrap().to_str().unwrap().to_string();
            let mut metadata = Map::new();
            metadata.insert("topic".into(), json!(id));
            metadata.insert("kind".into(), json!(if i % 2 == 0 { "manual" } else { "policy" }));
            metadata.insert("rank".into(), json!(i));
            DocumentInput { id, text: std::fs::read_to_string(p).unwrap(), format: Format::Markdown, metadata }
        })
        .collect()
}

fn prepare(e: &Arc<Embedder>, docs: &[DocumentInput]) -> Vec<DocumentWrite> {
    let counter = Counter(e.clone());
    let cfg = ChunkConfig::default();
    docs.iter()
        .map(|d| {
            let chunks = ingest::chunks(d, cfg, &counter);
            let vectors = embed(e, &chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>());
            DocumentWrite {
                info: DocumentInfo {
                    id: d.id.clone(),
                    content_hash: ingest::content_hash(d, cfg, "all-minilm-l6-v2"),
                    metadata: d.metadata.clone(),
                    chunks: chunks.len() as u32,
                    updated_at: 0,
                },
                chunks: chunks
                    .into_iter()
                    .zip(vectors)
                    .enumerate()
                    .map(|(i, (c, v))| ChunkWrite { index: i as u32, text: c.text, section: c.section, embedding: v })
                    .collect(),
            }
        })
        .collect()
}

struct Question {
    text: String,
    doc: String,
    vector: Vec<f32>,
}

fn questions(e: &Embedder) -> Vec<Question> {
    let q: Value = serde_json::from_slice(&std::fs::read(data_dir().join("questions.json")).unwrap()).unwrap();
    let q = q.as_array().unwrap();
    assert!(q.len() >= 30);
    let texts: Vec<&str> = q.iter().map(|x| x["question"].as_str().unwrap()).collect();
    let vectors = embed(e, &texts);
    q.iter()
        .zip(vectors)
        .map(|(x, vector)| Question { text: x["question"].as_str().unwrap().into(), doc: x["doc"].as_str().unwrap().into(), vector })
        .collect()
}

async fn top3(store: &dyn Store, q: &Question, p: &SearchParams) -> Vec<(String, u32)> {
    let hits = search::search(store, "corpus", &q.text, &q.vector, p).await.unwrap();
    hits.into_iter().map(|h| (h.doc_id, h.chunk_index)).collect()
}

fn recall(results: &[Vec<(String, u32)>], qs: &[Question]) -> f64 {
    let found = results.iter().zip(qs).filter(|(r, q)| r.iter().any(|(d, _)| *d == q.doc)).count();
    found as f64 / qs.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_at_3_and_backend_parity() {
    let e = embedder();
    let docs = corpus();
    let writes = prepare(&e, &docs);
    let qs = questions(&e);

    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let pg_server = voice_testkit::postgres::Postgres::start();
    let postgres = PostgresStore::connect(&pg_server.url, e.dimensions, 4).await.unwrap();
    let stores: [&dyn Store; 2] = [&embedded, &postgres];
    for s in stores {
        s.create_collection("corpus", e.dimensions, "all-minilm-l6-v2").await.unwrap();
        s.upsert("corpus", writes.clone()).await.unwrap();
        let info = s.collection("corpus").await.unwrap();
        assert_eq!(info.documents, 12);
        assert_eq!(info.chunks as usize, writes.iter().map(|w| w.chunks.len()).sum::<usize>());
    }

    let p = SearchParams { top_k: 3, ..Default::default() };
    let mut per_backend = Vec::new();
    for s in stores {
        let mut results = Vec::new();
        for q in &qs {
            results.push(top3(s, q, &p).await);
        }
        let r = recall(&results, &qs);
        eprintln!("{}: hybrid recall@3 = {r:.3} over {} questions", s.backend(), qs.len());
        for (res, q) in results.iter().zip(&qs) {
            if !res.iter().any(|(d, _)| *d == q.doc) {
                eprintln!("  miss: {:?} wants {} got {:?}", q.text, q.doc, res);
            }
        }
        assert!(r >= 0.9, "{} recall@3 {r}", s.backend());
        per_backend.push(results);
    }
    for ((a, b), q) in per_backend[0].iter().zip(&per_backend[1]).zip(&qs) {
        assert_eq!(a, b, "embedded and postgres disagree on {:?}", q.text);
    }

    // Each side alone, and both sides agree on those too.
    for mode in [search::SearchMode::Vector, search::SearchMode::Lexical] {
        let p = SearchParams { top_k: 3, mode, ..Default::default() };
        let mut all = Vec::new();
        for s in stores {
            let mut results = Vec::new();
            for q in &qs {
                results.push(top3(s, q, &p).await);
            }
            eprintln!("{}: {mode:?} recall@3 = {:.3}", s.backend(), recall(&results, &qs));
            all.push(results);
        }
        assert_eq!(all[0], all[1], "{mode:?} rankings differ between backends");
    }

    // Filters: the same meaning on both backends, and they really restrict.
    let filters = [
        json!({"kind": "manual"}),
        json!({"rank": {"$gte": 3, "$lt": 9}}),
        json!({"$or": [{"topic": "dog-training-basics"}, {"topic": {"$in": ["hiking-trail-guide"]}}]}),
        json!({"kind": {"$ne": "manual"}, "missing": {"$exists": false}}),
    ];
    for f in filters {
        let filter = Filter::parse(&f).unwrap();
        let p = SearchParams { top_k: 5, filter: filter.clone(), ..Default::default() };
        for q in qs.iter().take(12) {
            let a = search::search(&embedded, "corpus", &q.text, &q.vector, &p).await.unwrap();
            let b = search::search(&postgres, "corpus", &q.text, &q.vector, &p).await.unwrap();
            let ids = |h: &[search::Hit]| h.iter().map(|h| (h.doc_id.clone(), h.chunk_index)).collect::<Vec<_>>();
            assert_eq!(ids(&a), ids(&b), "filter {f} on {:?}", q.text);
            assert!(!a.is_empty());
            for h in &a {
                assert!(filter.matches(&h.metadata), "{f} let through {:?}", h.metadata);
            }
            for (x, y) in a.iter().zip(&b) {
                assert!((x.score - y.score).abs() < 1e-4, "scores {} vs {}", x.score, y.score);
            }
        }
    }

    // Update, idempotent re-ingest and delete behave alike.
    for s in stores {
        let before = s.collection("corpus").await.unwrap();
        s.upsert("corpus", vec![writes[0].clone()]).await.unwrap();
        assert_eq!(s.collection("corpus").await.unwrap(), before, "{}: re-upsert changed counts", s.backend());
        let mut shorter = writes[0].clone();
        shorter.chunks.truncate(1);
        shorter.info.chunks = 1;
        s.upsert("corpus", vec![shorter]).await.unwrap();
        let after = s.collection("corpus").await.unwrap();
        assert_eq!(after.chunks, before.chunks - (writes[0].chunks.len() as u64 - 1), "{}", s.backend());
        assert!(s.delete_document("corpus", &writes[0].info.id).await.unwrap());
        assert!(!s.delete_document("corpus", &writes[0].info.id).await.unwrap());
        assert!(s.document("corpus", &writes[0].info.id).await.unwrap().is_none());
        let p = SearchParams { top_k: 10, ..Default::default() };
        let q = qs.iter().find(|q| q.doc == writes[0].info.id).unwrap();
        let hits = search::search(s, "corpus", &q.text, &q.vector, &p).await.unwrap();
        assert!(hits.iter().all(|h| h.doc_id != writes[0].info.id), "{}: deleted document still found", s.backend());
        assert_eq!(s.collection("corpus").await.unwrap().documents, 11);
        assert!(matches!(s.collection("nope").await, Err(voice_rag::StoreError::CollectionNotFound(_))));
    }

    // The embedded store reopens with everything that was committed.
    let expected: Vec<_> = {
        let mut r = Vec::new();
        for q in &qs {
            r.push(top3(&embedded, q, &p).await);
        }
        r
    };
    drop(embedded);
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(reopened.collection("corpus").await.unwrap().documents, 11);
    for (q, want) in qs.iter().zip(&expected) {
        assert_eq!(&top3(&reopened, q, &p).await, want);
    }
}
