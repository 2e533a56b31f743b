//! PostgreSQL + pgvector: the scale-out store (several `voice-embed` replicas, one corpus).
//!
//! Tables (created on first use, under an advisory lock so replicas can start together):
//! `rag_collections` (with the chunk count and total term count BM25 needs), `rag_documents`,
//! `rag_chunks` (text, jsonb metadata, `vector(D)`) and `rag_postings` (the inverted index: one
//! row per term and chunk with its frequency, B-tree on (collection, term)). Vector
//! search orders by cosine distance through an HNSW index (strict-order iterative scans so a
//! filter does not starve the result); BM25 is computed in SQL with the constants and terms of
//! [`crate::lexical`], so the embedded and PostgreSQL stores rank the same chunks the same way.
//! Each upsert is one transaction, committed (synchronous commit) before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pgvector::Vector;
use serde_json::{Map, Value};
use tokio_postgres::{types::ToSql, NoTls, Row};

use super::{now_secs, validate_collection_name, Candidate, CollectionInfo, DocumentInfo, DocumentWrite, Store, StoreError, StoreResult};
use crate::{
    filter::Filter,
    lexical::{self, BM25_B, BM25_K1},
};

type Param = Box<dyn ToSql + Sync + Send>;

pub struct PostgresStore {
    pool: Pool,
    dimensions: usize,
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::backend(e)
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The server's message (e.g. "relation does not exist") is more useful than "db error".
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!("PostgreSQL: {}", db.message())),
        None => StoreError::Backend(format!("PostgreSQL: {e}")),
    }
}

impl PostgresStore {
    /// Connect (`postgres://user@host:port/db` or a key=value string) and create the schema for
    /// `dimensions`-wide vectors, or check an existing one has that width.
    pub async fn connect(url: &str, dimensions: usize, max_connections: usize) -> StoreResult<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Invalid(format!("--pg-url: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(max_connections.max(1)).build().map_err(be)?;
        let store = Self { pool, dimensions };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| StoreError::Backend(format!("PostgreSQL connection: {e}")))
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        txn.execute("SELECT pg_advisory_xact_lock(7242031)", &[]).await.map_err(pg)?;
        let d = self.dimensions;
        txn.batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE IF NOT EXISTS rag_collections (
                 name text PRIMARY KEY, dimensions int NOT NULL, model text NOT NULL, created_at bigint NOT NULL);
             -- BM25's collection statistics, kept in step by every write (a scan per query is too slow).
             ALTER TABLE rag_collections ADD COLUMN IF NOT EXISTS chunk_count bigint NOT NULL DEFAULT 0;
             ALTER TABLE rag_collections ADD COLUMN IF NOT EXISTS total_length bigint NOT NULL DEFAULT 0;
             CREATE TABLE IF NOT EXISTS rag_documents (
                 collection text NOT NULL REFERENCES rag_collections(name) ON DELETE CASCADE,
                 doc_id text NOT NULL, content_hash text NOT NULL, metadata jsonb NOT NULL,
                 chunks int NOT NULL, updated_at bigint NOT NULL,
                 PRIMARY KEY (collection, doc_id));
             CREATE TABLE IF NOT EXISTS rag_chunks (
                 collection text NOT NULL, doc_id text NOT NULL, chunk_index int NOT NULL,
                 text text NOT NULL, section text NOT NULL, metadata jsonb NOT NULL,
                 embedding vector({d}) NOT NULL, length int NOT NULL,
                 PRIMARY KEY (collection, doc_id, chunk_index),
                 FOREIGN KEY (collection, doc_id) REFERENCES rag_documents(collection, doc_id) ON DELETE CASCADE);
             CREATE TABLE IF NOT EXISTS rag_postings (
                 collection text NOT NULL, term text NOT NULL, doc_id text NOT NULL, chunk_index int NOT NULL,
                 tf int NOT NULL, length int NOT NULL,
                 PRIMARY KEY (collection, term, doc_id, chunk_index),
                 FOREIGN KEY (collection, doc_id, chunk_index) REFERENCES rag_chunks(collection, doc_id, chunk_index) ON DELETE CASCADE);
             CREATE INDEX IF NOT EXISTS rag_postings_chunk_idx ON rag_postings (collection, doc_id, chunk_index);
             CREATE INDEX IF NOT EXISTS rag_chunks_embedding_idx ON rag_chunks USING hnsw (embedding vector_cosine_ops);"
        ))
        .await
        .map_err(pg)?;
        let width: i32 = txn
            .query_one("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'rag_chunks'::regclass AND attname = 'embedding'", &[])
            .await
            .map_err(pg)?
            .get(0);
        txn.commit().await.map_err(pg)?;
        if width as usize != d {
            return Err(StoreError::Conflict(format!(
                "the database's rag_chunks table holds {width}-dimensional vectors; this service embeds {d} dimensions (use another database)"
            )));
        }
        Ok(())
    }

    async fn require_collection(&self, client: &tokio_postgres::Client, name: &str) -> StoreResult<()> {
        let found = client.query_opt("SELECT 1 FROM rag_collections WHERE name = $1", &[&name]).await.map_err(pg)?;
        found.map(|_| ()).ok_or_else(|| StoreError::CollectionNotFound(name.to_string()))
    }

    async fn collection_info(&self, client: &tokio_postgres::Client, name: &str) -> StoreResult<CollectionInfo> {
        let row = client
            .query_opt(format!("{COLLECTION_SELECT} WHERE c.name = $1").as_str(), &[&name])
            .await
            .map_err(pg)?
            .ok_or_else(|| StoreError::CollectionNotFound(name.to_string()))?;
        Ok(collection_from_row(&row))
    }
}

/// The columns [`collection_from_row`] reads.
const COLLECTION_SELECT: &str = "SELECT c.name, c.dimensions, c.model, c.created_at,
        (SELECT count(*) FROM rag_documents d WHERE d.collection = c.name), c.chunk_count
 FROM rag_collections c";

/// Metadata columns are always written as JSON objects.
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn collection_from_row(row: &Row) -> CollectionInfo {
    CollectionInfo {
        name: row.get(0),
        dimensions: row.get::<_, i32>(1) as usize,
        model: row.get(2),
        created_at: row.get::<_, i64>(3) as u64,
        documents: row.get::<_, i64>(4) as u64,
        chunks: row.get::<_, i64>(5) as u64,
    }
}

fn document_from_row(row: &Row) -> DocumentInfo {
    DocumentInfo {
        id: row.get(0),
        content_hash: row.get(1),
        metadata: object(row.get(2)),
        chunks: row.get::<_, i32>(3) as u32,
        updated_at: row.get::<_, i64>(4) as u64,
    }
}

fn candidate_from_row(row: &Row) -> Candidate {
    Candidate {
        doc_id: row.get(0),
        index: row.get::<_, i32>(1) as u32,
        text: row.get(2),
        section: row.get(3),
        metadata: object(row.get(4)),
        score: row.get(5),
    }
}

/// Compile a filter to a SQL condition on `c.metadata`, appending its parameters.
fn filter_sql(f: &Filter, params: &mut Vec<Param>) -> String {
    let next = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        format!("${}", params.len())
    };
    match f {
        Filter::All => "TRUE".into(),
        Filter::And(fs) => format!("({})", fs.iter().map(|f| filter_sql(f, params)).collect::<Vec<_>>().join(" AND ")),
        Filter::Or(fs) => format!("({})", fs.iter().map(|f| filter_sql(f, params)).collect::<Vec<_>>().join(" OR ")),
        Filter::Not(f) => format!("(NOT {})", filter_sql(f, params)),
        Filter::Eq(k, v) => {
            let mut obj = Map::new();
            obj.insert(k.clone(), v.clone());
            format!("(c.metadata @> {}::jsonb)", next(Box::new(Value::Object(obj)), params))
        }
        Filter::In(k, vs) => {
            let parts: Vec<String> = vs
                .iter()
                .map(|v| {
                    let mut obj = Map::new();
                    obj.insert(k.clone(), v.clone());
                    format!("c.metadata @> {}::jsonb", next(Box::new(Value::Object(obj)), params))
                })
                .collect();
            format!("({})", parts.join(" OR "))
        }
        Filter::Cmp(k, op, x) => {
            let key = next(Box::new(k.clone()), params);
            let val = next(Box::new(*x), params);
            // CASE, not AND: SQL does not promise to short-circuit, and the cast must not see a string.
            format!("(CASE WHEN jsonb_typeof(c.metadata -> {key}::text) = 'number' THEN (c.metadata ->> {key}::text)::float8 {} {val}::float8 ELSE false END)", op.sql())
        }
        Filter::Exists(k) => format!("((c.metadata -> {}::text) IS NOT NULL)", next(Box::new(k.clone()), params)),
    }
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_collection(&self, name: &str, dimensions: usize, model: &str) -> StoreResult<CollectionInfo> {
        validate_collection_name(name)?;
        if dimensions != self.dimensions {
            return Err(StoreError::Conflict(format!("this store holds {}-dimensional vectors, not {dimensions}", self.dimensions)));
        }
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO rag_collections (name, dimensions, model, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&name, &(dimensions as i32), &model, &(now_secs() as i64)],
            )
            .await
            .map_err(pg)?;
        let info = self.collection_info(&client, name).await?;
        if info.dimensions != dimensions {
            return Err(StoreError::Conflict(format!("collection `{name}` holds {}-dimensional vectors", info.dimensions)));
        }
        Ok(info)
    }

    async fn collection(&self, name: &str) -> StoreResult<CollectionInfo> {
        let client = self.client().await?;
        self.collection_info(&client, name).await
    }

    async fn list_collections(&self) -> StoreResult<Vec<CollectionInfo>> {
        let client = self.client().await?;
        let rows = client.query(format!("{COLLECTION_SELECT} ORDER BY c.name").as_str(), &[]).await.map_err(pg)?;
        Ok(rows.iter().map(collection_from_row).collect())
    }

    async fn delete_collection(&self, name: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let n = client.execute("DELETE FROM rag_collections WHERE name = $1", &[&name]).await.map_err(pg)?;
        if n == 0 {
            return Err(StoreError::CollectionNotFound(name.to_string()));
        }
        Ok(())
    }

    async fn upsert(&self, collection: &str, docs: Vec<DocumentWrite>) -> StoreResult<()> {
        let mut client = self.client().await?;
        self.require_collection(&client, collection).await?;
        for d in &docs {
            if let Some(c) = d.chunks.iter().find(|c| c.embedding.len() != self.dimensions) {
                return Err(StoreError::Invalid(format!(
                    "document `{}` chunk {}: {} dimensions, expected {}",
                    d.info.id,
                    c.index,
                    c.embedding.len(),
                    self.dimensions
                )));
            }
        }
        let txn = client.transaction().await.map_err(pg)?;
        let upsert_doc = txn
            .prepare(
                "INSERT INTO rag_documents (collection, doc_id, content_hash, metadata, chunks, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (collection, doc_id) DO UPDATE SET content_hash = EXCLUDED.content_hash, metadata = EXCLUDED.metadata,
                     chunks = EXCLUDED.chunks, updated_at = EXCLUDED.updated_at",
            )
            .await
            .map_err(pg)?;
        let insert_chunk = txn
            .prepare(
                "INSERT INTO rag_chunks (collection, doc_id, chunk_index, text, section, metadata, embedding, length)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await
            .map_err(pg)?;
        let (mut chunk_delta, mut length_delta) = (0i64, 0i64);
        let insert_postings = txn
            .prepare(
                "INSERT INTO rag_postings (collection, term, doc_id, chunk_index, tf, length)
                 SELECT $1, t, $2, $3, f, $4 FROM unnest($5::text[], $6::int[]) AS x(t, f)",
            )
            .await
            .map_err(pg)?;
        for d in &docs {
            let id = d.info.id.as_str();
            let old = txn
                .query_one(
                    "WITH gone AS (DELETE FROM rag_chunks WHERE collection = $1 AND doc_id = $2 RETURNING length)
                     SELECT count(*), coalesce(sum(length), 0)::bigint FROM gone",
                    &[&collection, &id],
                )
                .await
                .map_err(pg)?;
            chunk_delta -= old.get::<_, i64>(0);
            length_delta -= old.get::<_, i64>(1);
            let meta = Value::Object(d.info.metadata.clone());
            txn.execute(&upsert_doc, &[&collection, &id, &d.info.content_hash, &meta, &(d.info.chunks as i32), &(d.info.updated_at as i64)])
                .await
                .map_err(pg)?;
            for c in &d.chunks {
                let (tf, len) = lexical::term_frequencies(&c.text);
                let terms: Vec<&str> = tf.iter().map(|(t, _)| t.as_str()).collect();
                let tfs: Vec<i32> = tf.iter().map(|(_, n)| *n as i32).collect();
                let v = Vector::from(c.embedding.clone());
                txn.execute(&insert_chunk, &[&collection, &id, &(c.index as i32), &c.text, &c.section, &meta, &v, &(len as i32)])
                    .await
                    .map_err(pg)?;
                txn.execute(&insert_postings, &[&collection, &id, &(c.index as i32), &(len as i32), &terms, &tfs]).await.map_err(pg)?;
                chunk_delta += 1;
                length_delta += len as i64;
            }
        }
        txn.execute(
            "UPDATE rag_collections SET chunk_count = chunk_count + $2, total_length = total_length + $3 WHERE name = $1",
            &[&collection, &chunk_delta, &length_delta],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)
    }

    async fn document(&self, collection: &str, id: &str) -> StoreResult<Option<DocumentInfo>> {
        let client = self.client().await?;
        self.require_collection(&client, collection).await?;
        let row = client
            .query_opt(
                "SELECT doc_id, content_hash, metadata, chunks, updated_at FROM rag_documents WHERE collection = $1 AND doc_id = $2",
                &[&collection, &id],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(document_from_row))
    }

    async fn list_documents(&self, collection: &str, offset: usize, limit: usize) -> StoreResult<Vec<DocumentInfo>> {
        let client = self.client().await?;
        self.require_collection(&client, collection).await?;
        let rows = client
            .query(
                "SELECT doc_id, content_hash, metadata, chunks, updated_at FROM rag_documents WHERE collection = $1
                 ORDER BY doc_id COLLATE \"C\" OFFSET $2 LIMIT $3",
                &[&collection, &(offset as i64), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(document_from_row).collect())
    }

    async fn delete_document(&self, collection: &str, id: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        self.require_collection(&client, collection).await?;
        let txn = client.transaction().await.map_err(pg)?;
        let old = txn
            .query_one(
                "WITH gone AS (DELETE FROM rag_chunks WHERE collection = $1 AND doc_id = $2 RETURNING length)
                 SELECT count(*), coalesce(sum(length), 0)::bigint FROM gone",
                &[&collection, &id],
            )
            .await
            .map_err(pg)?;
        let n = txn.execute("DELETE FROM rag_documents WHERE collection = $1 AND doc_id = $2", &[&collection, &id]).await.map_err(pg)?;
        txn.execute(
            "UPDATE rag_collections SET chunk_count = chunk_count - $2, total_length = total_length - $3 WHERE name = $1",
            &[&collection, &old.get::<_, i64>(0), &old.get::<_, i64>(1)],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn vector_candidates(&self, collection: &str, query: &[f32], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>> {
        let mut client = self.client().await?;
        self.require_collection(&client, collection).await?;
        let mut params: Vec<Param> = vec![Box::new(collection.to_string()), Box::new(Vector::from(query.to_vec())), Box::new(limit as i64)];
        let cond = filter_sql(filter, &mut params);
        let sql = format!(
            "SELECT c.doc_id, c.chunk_index, c.text, c.section, c.metadata, (1 - (c.embedding <=> $2))::float8
             FROM rag_chunks c WHERE c.collection = $1 AND {cond}
             ORDER BY c.embedding <=> $2 LIMIT $3"
        );
        // Ordered by distance alone so the HNSW index can serve it (ties are broken in Rust).
        // Search settings are per transaction so pooled connections stay clean.
        let txn = client.transaction().await.map_err(pg)?;
        txn.batch_execute(&format!("SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = strict_order", (limit * 2).clamp(100, 1000)))
            .await
            .map_err(pg)?;
        let rows = txn.query(&sql, &refs(&params)).await.map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        let mut out: Vec<Candidate> = rows.iter().map(candidate_from_row).collect();
        super::sort_candidates(&mut out);
        Ok(out)
    }

    async fn lexical_candidates(&self, collection: &str, terms: &[String], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>> {
        let client = self.client().await?;
        self.require_collection(&client, collection).await?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut params: Vec<Param> = vec![Box::new(collection.to_string()), Box::new(terms.to_vec()), Box::new(limit as i64)];
        let cond = filter_sql(filter, &mut params);
        // Only the postings of the query's terms are read (B-tree on (collection, term)). The CTEs
        // are MATERIALIZED so the planner does not re-run the document-frequency count per row.
        // Without a filter the top `limit` is cut before the join with the chunk rows.
        let early_limit = if filter.is_all() { "ORDER BY score DESC, doc_id, chunk_index LIMIT $3" } else { "" };
        let sql = format!(
            "WITH stats AS MATERIALIZED (
                 SELECT chunk_count::float8 AS n,
                        CASE WHEN chunk_count > 0 THEN total_length::float8 / chunk_count ELSE 0 END AS avgdl
                 FROM rag_collections WHERE name = $1),
             q AS MATERIALIZED (
                 SELECT t AS term, (SELECT count(*) FROM rag_postings p WHERE p.collection = $1 AND p.term = t)::float8 AS df
                 FROM unnest($2::text[]) AS t),
             scored AS MATERIALIZED (
                 SELECT p.doc_id, p.chunk_index,
                        sum(ln(1 + (stats.n - q.df + 0.5) / (q.df + 0.5))
                            * p.tf * ({k1} + 1) / (p.tf + {k1} * (1 - {b} + {b} * p.length / stats.avgdl)))::float8 AS score
                 FROM q JOIN rag_postings p ON p.collection = $1 AND p.term = q.term CROSS JOIN stats
                 GROUP BY p.doc_id, p.chunk_index
                 {early_limit})
             SELECT c.doc_id, c.chunk_index, c.text, c.section, c.metadata, s.score
             FROM scored s JOIN rag_chunks c ON c.collection = $1 AND c.doc_id = s.doc_id AND c.chunk_index = s.chunk_index
             WHERE {cond}
             ORDER BY s.score DESC, c.doc_id, c.chunk_index LIMIT $3",
            k1 = BM25_K1,
            b = BM25_B,
        );
        let rows = client.query(&sql, &refs(&params)).await.map_err(pg)?;
        let mut out: Vec<Candidate> = rows.iter().map(candidate_from_row).collect();
        super::sort_candidates(&mut out);
        Ok(out)
    }
}

/// For callers that hold stores behind one type.
pub type SharedStore = Arc<dyn Store>;
