//! The embedded store: redb on disk, indexes in memory.
//!
//! Durability: every write is one redb transaction committed with `Durability::Immediate`
//! (fsync) before `upsert` returns, so what a client saw acknowledged is on disk, and a crash
//! mid-write leaves the previous committed state (redb's commit is a copy-on-write root swap).
//! The in-memory indexes are rebuilt from the file at start-up and updated after each commit;
//! writes are serialised so memory applies them in commit order.
//!
//! Search is exact: a cosine scan over the collection's vectors (contiguous f32, dot products of
//! unit vectors) and BM25 over in-memory postings.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    now_secs, sort_candidates, validate_collection_name, Candidate, ChunkWrite, CollectionInfo, DocumentInfo, DocumentWrite, Store, StoreError,
    StoreResult,
};
use crate::{filter::Filter, lexical};

const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
const DOCUMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("documents");
const CHUNKS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("chunks");

#[derive(Serialize, Deserialize)]
struct CollectionRow {
    dimensions: usize,
    model: String,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ChunkHeader {
    text: String,
    section: String,
}

/// A chunk row: u32 header length, JSON header, then the vector as little-endian f32.
fn encode_chunk(c: &ChunkWrite) -> Vec<u8> {
    let header = serde_json::to_vec(&ChunkHeader { text: c.text.clone(), section: c.section.clone() }).expect("serialisable");
    let mut out = Vec::with_capacity(4 + header.len() + 4 * c.embedding.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for x in &c.embedding {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode_chunk(bytes: &[u8]) -> StoreResult<(ChunkHeader, Vec<f32>)> {
    let bad = || StoreError::Backend("corrupt chunk row".into());
    let n = u32::from_le_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let header: ChunkHeader = serde_json::from_slice(bytes.get(4..4 + n).ok_or_else(bad)?).map_err(|_| bad())?;
    let rest = &bytes[4 + n..];
    if !rest.len().is_multiple_of(4) {
        return Err(bad());
    }
    Ok((header, rest.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}

struct Slot {
    doc_id: Arc<str>,
    index: u32,
    text: String,
    section: String,
    metadata: Arc<Map<String, Value>>,
    terms: Vec<(String, u32)>,
    len: u32,
}

struct MemCollection {
    row: CollectionRow,
    docs: BTreeMap<String, (DocumentInfo, Arc<Map<String, Value>>)>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    doc_slots: HashMap<String, Vec<u32>>,
    /// slot * dimensions .. : the slot's unit vector.
    vectors: Vec<f32>,
    postings: HashMap<String, Vec<(u32, u32)>>,
    total_terms: u64,
    live: u64,
}

impl MemCollection {
    fn new(row: CollectionRow) -> Self {
        Self {
            row,
            docs: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            doc_slots: HashMap::new(),
            vectors: Vec::new(),
            postings: HashMap::new(),
            total_terms: 0,
            live: 0,
        }
    }

    fn info(&self, name: &str) -> CollectionInfo {
        CollectionInfo {
            name: name.to_string(),
            dimensions: self.row.dimensions,
            model: self.row.model.clone(),
            created_at: self.row.created_at,
            documents: self.docs.len() as u64,
            chunks: self.live,
        }
    }

    fn remove_document(&mut self, id: &str) -> bool {
        let existed = self.docs.remove(id).is_some();
        for slot in self.doc_slots.remove(id).unwrap_or_default() {
            if let Some(s) = self.slots[slot as usize].take() {
                for (term, _) in &s.terms {
                    if let Some(list) = self.postings.get_mut(term) {
                        list.retain(|&(sl, _)| sl != slot);
                        if list.is_empty() {
                            self.postings.remove(term);
                        }
                    }
                }
                self.total_terms -= s.len as u64;
                self.live -= 1;
                self.free.push(slot);
            }
        }
        existed
    }

    fn add_chunk(&mut self, doc_id: &Arc<str>, metadata: &Arc<Map<String, Value>>, index: u32, text: String, section: String, embedding: &[f32]) {
        let dims = self.row.dimensions;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.vectors.resize(self.slots.len() * dims, 0.0);
                (self.slots.len() - 1) as u32
            }
        };
        self.vectors[slot as usize * dims..(slot as usize + 1) * dims].copy_from_slice(embedding);
        let (terms, len) = lexical::term_frequencies(&text);
        for (term, tf) in &terms {
            self.postings.entry(term.clone()).or_default().push((slot, *tf));
        }
        self.total_terms += len as u64;
        self.live += 1;
        self.doc_slots.entry(doc_id.to_string()).or_default().push(slot);
        self.slots[slot as usize] = Some(Slot { doc_id: doc_id.clone(), index, text, section, metadata: metadata.clone(), terms, len });
    }

    fn candidate(&self, slot: u32, score: f64) -> Candidate {
        let s = self.slots[slot as usize].as_ref().expect("live slot");
        Candidate {
            doc_id: s.doc_id.to_string(),
            index: s.index,
            text: s.text.clone(),
            section: s.section.clone(),
            metadata: (*s.metadata).clone(),
            score,
        }
    }
}

#[derive(Default)]
struct Mem {
    collections: HashMap<String, MemCollection>,
}

/// See the module docs.
pub struct EmbeddedStore {
    db: Arc<Database>,
    mem: Arc<RwLock<Mem>>,
    /// Serialises writes so the in-memory indexes apply them in commit order.
    write_lock: tokio::sync::Mutex<()>,
    pub path: PathBuf,
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::backend(e)
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir` (file `rag.redb`) and rebuild the indexes.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("rag.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        {
            let txn = db.begin_write().map_err(be)?;
            txn.open_table(COLLECTIONS).map_err(be)?;
            txn.open_table(DOCUMENTS).map_err(be)?;
            txn.open_table(CHUNKS).map_err(be)?;
            txn.commit().map_err(be)?;
        }
        let mut mem = Mem::default();
        let txn = db.begin_read().map_err(be)?;
        for row in txn.open_table(COLLECTIONS).map_err(be)?.iter().map_err(be)? {
            let (k, v) = row.map_err(be)?;
            let r: CollectionRow = serde_json::from_slice(v.value()).map_err(be)?;
            mem.collections.insert(k.value().to_string(), MemCollection::new(r));
        }
        for row in txn.open_table(DOCUMENTS).map_err(be)?.iter().map_err(be)? {
            let (k, v) = row.map_err(be)?;
            let (c, d) = k.value();
            let info: DocumentInfo = serde_json::from_slice(v.value()).map_err(be)?;
            if let Some(col) = mem.collections.get_mut(c) {
                let meta = Arc::new(info.metadata.clone());
                col.docs.insert(d.to_string(), (info, meta));
            }
        }
        for row in txn.open_table(CHUNKS).map_err(be)?.iter().map_err(be)? {
            let (k, v) = row.map_err(be)?;
            let (c, d, i) = k.value();
            let (header, vector) = decode_chunk(v.value())?;
            if let Some(col) = mem.collections.get_mut(c) {
                if let Some((_, meta)) = col.docs.get(d).map(|(i, m)| (i.clone(), m.clone())) {
                    if vector.len() == col.row.dimensions {
                        let id: Arc<str> = Arc::from(d);
                        col.add_chunk(&id, &meta, i, header.text, header.section, &vector);
                    }
                }
            }
        }
        let chunks: u64 = mem.collections.values().map(|c| c.live).sum();
        tracing::info!(path = %path.display(), collections = mem.collections.len(), chunks, "embedded RAG store opened");
        Ok(Self { db: Arc::new(db), mem: Arc::new(RwLock::new(mem)), write_lock: tokio::sync::Mutex::new(()), path })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Database, &RwLock<Mem>) -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
        let db = self.db.clone();
        let mem = self.mem.clone();
        tokio::task::spawn_blocking(move || f(&db, &mem)).await.map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    fn read<T>(&self, name: &str, f: impl FnOnce(&MemCollection) -> T) -> StoreResult<T> {
        let mem = self.mem.read().expect("store lock poisoned");
        mem.collections.get(name).map(f).ok_or_else(|| StoreError::CollectionNotFound(name.to_string()))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums so the compiler vectorises without -ffast-math reassociation.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

fn top(mut scored: Vec<(u32, f64)>, limit: usize) -> Vec<(u32, f64)> {
    if scored.len() > limit && limit > 0 {
        scored.select_nth_unstable_by(limit - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(limit);
    }
    scored
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_collection(&self, name: &str, dimensions: usize, model: &str) -> StoreResult<CollectionInfo> {
        validate_collection_name(name)?;
        let _w = self.write_lock.lock().await;
        if let Ok(info) = self.read(name, |c| c.info(name)) {
            if info.dimensions != dimensions {
                return Err(StoreError::Conflict(format!(
                    "collection `{name}` holds {}-dimensional vectors from `{}`; this service embeds {dimensions} dimensions",
                    info.dimensions, info.model
                )));
            }
            return Ok(info);
        }
        let (name, model) = (name.to_string(), model.to_string());
        self.blocking(move |db, mem| {
            let row = CollectionRow { dimensions, model, created_at: now_secs() };
            let txn = db.begin_write().map_err(be)?;
            txn.open_table(COLLECTIONS).map_err(be)?.insert(name.as_str(), serde_json::to_vec(&row).map_err(be)?.as_slice()).map_err(be)?;
            txn.commit().map_err(be)?;
            let mut mem = mem.write().expect("store lock poisoned");
            let col = MemCollection::new(row);
            let info = col.info(&name);
            mem.collections.insert(name, col);
            Ok(info)
        })
        .await
    }

    async fn collection(&self, name: &str) -> StoreResult<CollectionInfo> {
        self.read(name, |c| c.info(name))
    }

    async fn list_collections(&self) -> StoreResult<Vec<CollectionInfo>> {
        let mem = self.mem.read().expect("store lock poisoned");
        let mut out: Vec<CollectionInfo> = mem.collections.iter().map(|(n, c)| c.info(n)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_collection(&self, name: &str) -> StoreResult<()> {
        let _w = self.write_lock.lock().await;
        self.read(name, |_| ())?;
        let name = name.to_string();
        self.blocking(move |db, mem| {
            let txn = db.begin_write().map_err(be)?;
            txn.open_table(COLLECTIONS).map_err(be)?.remove(name.as_str()).map_err(be)?;
            txn.open_table(DOCUMENTS).map_err(be)?.retain(|(c, _), _| c != name).map_err(be)?;
            txn.open_table(CHUNKS).map_err(be)?.retain(|(c, _, _), _| c != name).map_err(be)?;
            txn.commit().map_err(be)?;
            mem.write().expect("store lock poisoned").collections.remove(&name);
            Ok(())
        })
        .await
    }

    async fn upsert(&self, collection: &str, docs: Vec<DocumentWrite>) -> StoreResult<()> {
        let _w = self.write_lock.lock().await;
        let dims = self.read(collection, |c| c.row.dimensions)?;
        for d in &docs {
            if let Some(c) = d.chunks.iter().find(|c| c.embedding.len() != dims) {
                return Err(StoreError::Invalid(format!(
                    "document `{}` chunk {}: {} dimensions, expected {dims}",
                    d.info.id,
                    c.index,
                    c.embedding.len()
                )));
            }
        }
        let collection = collection.to_string();
        self.blocking(move |db, mem| {
            let txn = db.begin_write().map_err(be)?;
            {
                let mut documents = txn.open_table(DOCUMENTS).map_err(be)?;
                let mut chunks = txn.open_table(CHUNKS).map_err(be)?;
                for d in &docs {
                    let id = d.info.id.as_str();
                    chunks.retain_in((collection.as_str(), id, 0u32)..=(collection.as_str(), id, u32::MAX), |_, _| false).map_err(be)?;
                    documents.insert((collection.as_str(), id), serde_json::to_vec(&d.info).map_err(be)?.as_slice()).map_err(be)?;
                    for c in &d.chunks {
                        chunks.insert((collection.as_str(), id, c.index), encode_chunk(c).as_slice()).map_err(be)?;
                    }
                }
            }
            txn.commit().map_err(be)?;
            // Committed: now visible to searches.
            let mut mem = mem.write().expect("store lock poisoned");
            let col = mem.collections.get_mut(&collection).ok_or_else(|| StoreError::CollectionNotFound(collection.clone()))?;
            for d in docs {
                col.remove_document(&d.info.id);
                let id: Arc<str> = Arc::from(d.info.id.as_str());
                let meta = Arc::new(d.info.metadata.clone());
                for c in d.chunks {
                    col.add_chunk(&id, &meta, c.index, c.text, c.section, &c.embedding);
                }
                col.docs.insert(d.info.id.clone(), (d.info, meta));
            }
            Ok(())
        })
        .await
    }

    async fn document(&self, collection: &str, id: &str) -> StoreResult<Option<DocumentInfo>> {
        self.read(collection, |c| c.docs.get(id).map(|(i, _)| i.clone()))
    }

    async fn list_documents(&self, collection: &str, offset: usize, limit: usize) -> StoreResult<Vec<DocumentInfo>> {
        self.read(collection, |c| c.docs.values().skip(offset).take(limit).map(|(i, _)| i.clone()).collect())
    }

    async fn delete_document(&self, collection: &str, id: &str) -> StoreResult<bool> {
        let _w = self.write_lock.lock().await;
        if !self.read(collection, |c| c.docs.contains_key(id))? {
            return Ok(false);
        }
        let (collection, id) = (collection.to_string(), id.to_string());
        self.blocking(move |db, mem| {
            let txn = db.begin_write().map_err(be)?;
            txn.open_table(DOCUMENTS).map_err(be)?.remove((collection.as_str(), id.as_str())).map_err(be)?;
            txn.open_table(CHUNKS)
                .map_err(be)?
                .retain_in((collection.as_str(), id.as_str(), 0u32)..=(collection.as_str(), id.as_str(), u32::MAX), |_, _| false)
                .map_err(be)?;
            txn.commit().map_err(be)?;
            let mut mem = mem.write().expect("store lock poisoned");
            Ok(mem.collections.get_mut(&collection).map(|c| c.remove_document(&id)).unwrap_or(false))
        })
        .await
    }

    async fn vector_candidates(&self, collection: &str, query: &[f32], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>> {
        let (collection, query, filter) = (collection.to_string(), query.to_vec(), filter.clone());
        self.blocking(move |_, mem| {
            let mem = mem.read().expect("store lock poisoned");
            let col = mem.collections.get(&collection).ok_or_else(|| StoreError::CollectionNotFound(collection.clone()))?;
            let dims = col.row.dimensions;
            if query.len() != dims {
                return Err(StoreError::Invalid(format!("query has {} dimensions, the collection {dims}", query.len())));
            }
            let scored: Vec<(u32, f64)> = col
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let s = s.as_ref()?;
                    if !filter.is_all() && !filter.matches(&s.metadata) {
                        return None;
                    }
                    Some((i as u32, dot(&query, &col.vectors[i * dims..(i + 1) * dims]) as f64))
                })
                .collect();
            let mut out: Vec<Candidate> = top(scored, limit).into_iter().map(|(slot, score)| col.candidate(slot, score)).collect();
            sort_candidates(&mut out);
            Ok(out)
        })
        .await
    }

    async fn lexical_candidates(&self, collection: &str, terms: &[String], limit: usize, filter: &Filter) -> StoreResult<Vec<Candidate>> {
        let (collection, terms, filter) = (collection.to_string(), terms.to_vec(), filter.clone());
        self.blocking(move |_, mem| {
            let mem = mem.read().expect("store lock poisoned");
            let col = mem.collections.get(&collection).ok_or_else(|| StoreError::CollectionNotFound(collection.clone()))?;
            if col.live == 0 {
                return Ok(Vec::new());
            }
            let n = col.live as f64;
            let avg = col.total_terms as f64 / n;
            let mut scores: HashMap<u32, f64> = HashMap::new();
            for term in &terms {
                let Some(list) = col.postings.get(term) else { continue };
                let idf = lexical::idf(n, list.len() as f64);
                for &(slot, tf) in list {
                    let len = col.slots[slot as usize].as_ref().map(|s| s.len).unwrap_or(0) as f64;
                    *scores.entry(slot).or_default() += lexical::bm25_term(idf, tf as f64, len, avg);
                }
            }
            let scored: Vec<(u32, f64)> = scores
                .into_iter()
                .filter(|(slot, _)| filter.is_all() || col.slots[*slot as usize].as_ref().is_some_and(|s| filter.matches(&s.metadata)))
                .collect();
            let mut out: Vec<Candidate> = top(scored, limit).into_iter().map(|(slot, score)| col.candidate(slot, score)).collect();
            sort_candidates(&mut out);
            Ok(out)
        })
        .await
    }
}

/// What a fresh store directory holds; for the README and operators.
pub const FILE_NAME: &str = "rag.redb";
