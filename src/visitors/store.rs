//! The visitors' tables in the gallery database (schema 3, `src/gallery/schema.rs`) and every
//! operation on them, each one transaction: record an unknown track (join or found a visitor),
//! list, get, name (enroll as an identity), merge, ignore, forget, and retention. A generation
//! counter in `meta` (`visitors_generation`) changes with every write, so a process that caches
//! the visitors (the pipeline's [`super::tracker::VisitorBook`]) knows when another one (the HTTP
//! server) changed them.

use super::cluster::{best_match, Cluster, Kept, Linkage, KEEP};
use crate::embed::{EmbedderId, EMBEDDING_DIM};
use crate::gallery::{check_name, Gallery, GalleryError, NewTemplate};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

/// A visitor's id: the row id, shown as `v<number>` in events and URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisitorId(pub i64);

impl std::fmt::Display for VisitorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl VisitorId {
    /// Parses `v<digits>` (at most 18 digits; no sign, space or anything else).
    pub fn parse(s: &str) -> Result<Self, VisitorError> {
        let bad = || VisitorError::BadId(s.chars().take(40).collect());
        let digits = s.strip_prefix('v').ok_or_else(bad)?;
        if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse().map(VisitorId).map_err(|_| bad())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VisitorError {
    #[error("{0:?} is not a visitor id: use an id as GET /api/visitors lists them, such as \"v17\"")]
    BadId(String),
    #[error("no visitor {0} (forgotten, named, merged or removed by retention?): GET /api/visitors lists them")]
    Unknown(VisitorId),
    #[error("cannot merge visitor {0} into itself: give another visitor as \"into\"")]
    SameVisitor(VisitorId),
    #[error("visitor {0} has no kept face embedding to enroll")]
    NothingToEnroll(VisitorId),
    #[error(transparent)]
    Gallery(#[from] GalleryError),
}

impl From<rusqlite::Error> for VisitorError {
    fn from(e: rusqlite::Error) -> Self {
        VisitorError::Gallery(GalleryError::Sql(e))
    }
}

impl VisitorError {
    /// Names the gallery file in a database error.
    fn locate(self, g: &Gallery) -> Self {
        match self {
            VisitorError::Gallery(e) => VisitorError::Gallery(g.locate(e)),
            other => other,
        }
    }
}

/// A camera a visitor was seen on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraVisits {
    pub camera: String,
    pub visits: u64,
    pub last_seen_ms: i64,
}

/// A visitor as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitorSummary {
    /// `v<number>`.
    pub id: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Visits (tracks) counted, on every camera.
    pub visits: u64,
    /// The cameras, most visited first.
    pub cameras: Vec<CameraVisits>,
    pub ignored: bool,
    /// Events not sent because the visitor is ignored.
    pub suppressed: u64,
    /// Embeddings kept (at most [`KEEP`]).
    pub embeddings: usize,
    /// The crop of the best kept face, when crops were saved.
    pub best_shot: Option<String>,
}

/// An unknown track's decision, as the visitors see it.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    pub camera: &'a str,
    pub track: u64,
    /// The track's fused embedding (normalised).
    pub embedding: &'a [f32],
    /// `"sface"`, `"lrembed"`, or `"mixed"`.
    pub embedder: &'a str,
    pub quality: f32,
    pub face_px: f32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The best shot's crop file, when crops are saved.
    pub crop: Option<&'a str>,
}

/// What a sighting was made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub id: VisitorId,
    /// The kept embedding's row, when the sighting's embedding was kept.
    pub row: Option<i64>,
    pub visits: u64,
    /// Camera names, most visited first.
    pub cameras: Vec<String>,
    pub ignored: bool,
    /// Whether the visitor was founded by this sighting.
    pub new: bool,
}

/// How a sighting is attached.
#[derive(Debug, Clone, Copy)]
pub enum Attach {
    /// A new visit: join the best-matching visitor (at or above `threshold`) or found one.
    Match { linkage: Linkage, threshold: f32 },
    /// More of a visit already counted for this visitor (a track's final event after its
    /// decision): `replace` is the row the decision kept, replaced by this better fused embedding.
    Continue { id: VisitorId, replace: Option<i64> },
}

/// The visitors of a database as the clustering sees them, with the generation they are of.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    pub generation: Option<i64>,
    pub clusters: Vec<Cluster>,
}

fn generation(conn: &Connection) -> rusqlite::Result<i64> {
    let v: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'visitors_generation'", [], |r| r.get(0)).optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn bump(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('visitors_generation', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    generation(tx)
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// One visitor's kept embeddings as a cluster (`None` if it has none usable).
fn load_cluster(conn: &Connection, id: i64) -> rusqlite::Result<Option<Cluster>> {
    let mut stmt = conn.prepare_cached(
        "SELECT vector, quality FROM visitor_embeddings WHERE visitor_id = ?1 ORDER BY quality DESC, id ASC",
    )?;
    let kept = stmt
        .query_map([id], |r| {
            Ok(Kept { vector: from_blob(&r.get::<_, Vec<u8>>(0)?), quality: r.get::<_, f64>(1)? as f32 })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Cluster::new(id, kept.into_iter().filter(|k| k.vector.len() == EMBEDDING_DIM).collect()))
}

fn load_all(conn: &Connection) -> rusqlite::Result<Vec<Cluster>> {
    let ids: Vec<i64> =
        conn.prepare("SELECT id FROM visitors ORDER BY id")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(load_cluster(conn, id)?);
    }
    Ok(out)
}

fn exists(conn: &Connection, id: VisitorId) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM visitors WHERE id = ?1)", [id.0], |r| r.get(0))
}

/// Camera names of a visitor, most visited first.
fn camera_names(conn: &Connection, id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT camera FROM visitor_cameras WHERE visitor_id = ?1 ORDER BY visits DESC, last_seen_ms DESC, camera",
    )?;
    let names = stmt.query_map([id], |r| r.get(0))?.collect();
    names
}

/// Keeps the visitor's best [`KEEP`] embeddings (ties: the older). The crop file of a dropped
/// row stays: it is the best shot of a stored event too, and `[crops]` retention owns it.
fn prune(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM visitor_embeddings WHERE id IN (SELECT id FROM visitor_embeddings WHERE visitor_id = ?1
         ORDER BY quality DESC, id ASC LIMIT -1 OFFSET ?2)",
        params![id, KEEP as i64],
    )?;
    Ok(())
}

/// Records an unknown track's sighting in one transaction: joins a visitor (or founds one, or
/// continues the visit `attach` names) and keeps the embedding if it is among the visitor's best.
/// `cache` is brought up to date first when another process changed the visitors, and is kept
/// in step with what this writes. A visitor deleted meanwhile (`Continue` of a forgotten one)
/// falls back to matching with `fallback`.
pub fn record(
    g: &mut Gallery,
    cache: &mut Cache,
    s: &Sighting<'_>,
    attach: Attach,
    fallback: (Linkage, f32),
) -> Result<Recorded, VisitorError> {
    record_at(g.connection(), cache, s, attach, fallback).map_err(|e| e.locate(g))
}

fn record_at(
    conn: &mut Connection,
    cache: &mut Cache,
    s: &Sighting<'_>,
    attach: Attach,
    fallback: (Linkage, f32),
) -> Result<Recorded, VisitorError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_gen = generation(&tx)?;
    if cache.generation != Some(now_gen) {
        cache.clusters = load_all(&tx)?;
    }
    let attach = match attach {
        Attach::Continue { id, .. } if !exists(&tx, id)? => {
            Attach::Match { linkage: fallback.0, threshold: fallback.1 }
        }
        other => other,
    };
    let (id, new, visit) = match attach {
        Attach::Continue { id, replace } => {
            if let Some(row) = replace {
                tx.execute("DELETE FROM visitor_embeddings WHERE id = ?1 AND visitor_id = ?2", params![row, id.0])?;
            }
            (id.0, false, false)
        }
        Attach::Match { linkage, threshold } => match best_match(&cache.clusters, s.embedding, linkage, threshold) {
            Some((i, _)) => (cache.clusters[i].id, false, true),
            None => {
                tx.execute(
                    "INSERT INTO visitors (first_seen_ms, last_seen_ms, visits) VALUES (?1, ?2, 0)",
                    params![s.first_seen_ms, s.last_seen_ms],
                )?;
                (tx.last_insert_rowid(), true, true)
            }
        },
    };
    tx.execute(
        "UPDATE visitors SET visits = visits + ?2, first_seen_ms = MIN(first_seen_ms, ?3),
         last_seen_ms = MAX(last_seen_ms, ?4) WHERE id = ?1",
        params![id, i64::from(visit), s.first_seen_ms, s.last_seen_ms],
    )?;
    tx.execute(
        "INSERT INTO visitor_cameras (visitor_id, camera, visits, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (visitor_id, camera) DO UPDATE SET visits = visits + excluded.visits,
         last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
        params![id, s.camera, i64::from(visit), s.last_seen_ms],
    )?;
    tx.execute(
        "INSERT INTO visitor_embeddings (visitor_id, embedder, dim, vector, quality, face_px, camera, track, seen_ms, crop)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            s.embedder,
            s.embedding.len() as i64,
            to_blob(s.embedding),
            f64::from(s.quality),
            f64::from(s.face_px),
            s.camera,
            s.track as i64,
            s.last_seen_ms,
            s.crop
        ],
    )?;
    let row = tx.last_insert_rowid();
    prune(&tx, id)?;
    let kept: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM visitor_embeddings WHERE id = ?1)", [row], |r| r.get(0))?;
    let (visits, ignored): (i64, bool) =
        tx.query_row("SELECT visits, ignored FROM visitors WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let cameras = camera_names(&tx, id)?;
    let cluster = load_cluster(&tx, id)?;
    let generation = bump(&tx)?;
    tx.commit()?;
    cache.clusters.retain(|c| c.id != id);
    cache.clusters.extend(cluster);
    cache.generation = Some(generation);
    Ok(Recorded { id: VisitorId(id), row: kept.then_some(row), visits: visits as u64, cameras, ignored, new })
}

/// Counts an event suppressed because its visitor is ignored.
pub fn count_suppressed(g: &mut Gallery, id: VisitorId) -> Result<(), VisitorError> {
    g.connection()
        .execute("UPDATE visitors SET suppressed = suppressed + 1 WHERE id = ?1", [id.0])
        .map(drop)
        .map_err(|e| VisitorError::from(e).locate(g))
}

/// Every visitor, most recently seen first.
pub fn list(g: &mut Gallery) -> Result<Vec<VisitorSummary>, VisitorError> {
    list_at(g.connection(), None).map_err(|e| VisitorError::from(e).locate(g))
}

/// One visitor.
pub fn get(g: &mut Gallery, id: VisitorId) -> Result<VisitorSummary, VisitorError> {
    match list_at(g.connection(), Some(id)) {
        Ok(mut v) if !v.is_empty() => Ok(v.remove(0)),
        Ok(_) => Err(VisitorError::Unknown(id)),
        Err(e) => Err(VisitorError::from(e).locate(g)),
    }
}

fn list_at(conn: &Connection, only: Option<VisitorId>) -> rusqlite::Result<Vec<VisitorSummary>> {
    let mut stmt = conn.prepare(
        "SELECT v.id, v.first_seen_ms, v.last_seen_ms, v.visits, v.ignored, v.suppressed,
                (SELECT COUNT(*) FROM visitor_embeddings e WHERE e.visitor_id = v.id),
                (SELECT crop FROM visitor_embeddings e WHERE e.visitor_id = v.id AND crop IS NOT NULL
                 ORDER BY quality DESC, id ASC LIMIT 1)
         FROM visitors v WHERE ?1 IS NULL OR v.id = ?1 ORDER BY v.last_seen_ms DESC, v.id DESC",
    )?;
    let rows = stmt
        .query_map([only.map(|i| i.0)], |r| {
            Ok(VisitorSummary {
                id: VisitorId(r.get(0)?).to_string(),
                first_seen_ms: r.get(1)?,
                last_seen_ms: r.get(2)?,
                visits: r.get::<_, i64>(3)?.max(0) as u64,
                cameras: Vec::new(),
                ignored: r.get(4)?,
                suppressed: r.get::<_, i64>(5)?.max(0) as u64,
                embeddings: r.get::<_, i64>(6)?.max(0) as usize,
                best_shot: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut cams = conn.prepare(
        "SELECT camera, visits, last_seen_ms FROM visitor_cameras WHERE visitor_id = ?1
         ORDER BY visits DESC, last_seen_ms DESC, camera",
    )?;
    let mut out = rows;
    for v in &mut out {
        let id = VisitorId::parse(&v.id).map(|i| i.0).unwrap_or_default();
        v.cameras = cams
            .query_map([id], |r| {
                Ok(CameraVisits {
                    camera: r.get(0)?,
                    visits: r.get::<_, i64>(1)?.max(0) as u64,
                    last_seen_ms: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(out)
}

/// What naming a visitor did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Named {
    pub name: String,
    /// Whether the identity was new (else the templates were added to it).
    pub created: bool,
    pub templates: usize,
}

/// Names a visitor: its kept embeddings become templates of identity `name` (created if new,
/// else added to), and the visitor is deleted, all in one transaction. The templates are tagged
/// with `embedder` (the gallery's: the small-face embedder's vectors live in its space) and say
/// in their source which visitor and embedder path they came from.
pub fn name(g: &mut Gallery, id: VisitorId, name: &str, embedder: &EmbedderId) -> Result<Named, VisitorError> {
    check_name(name)?;
    g.check_embedder_for(embedder)?;
    name_at(g.connection(), id, name, embedder).map_err(|e| e.locate(g))
}

fn name_at(conn: &mut Connection, id: VisitorId, name: &str, embedder: &EmbedderId) -> Result<Named, VisitorError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !exists(&tx, id)? {
        return Err(VisitorError::Unknown(id));
    }
    let mut stmt = tx.prepare(
        "SELECT vector, embedder, face_px, camera, track, seen_ms FROM visitor_embeddings WHERE visitor_id = ?1
         ORDER BY quality DESC, id ASC",
    )?;
    let templates: Vec<NewTemplate> = stmt
        .query_map([id.0], |r| {
            let (embedder, camera, track, seen): (String, String, i64, i64) =
                (r.get(1)?, r.get(3)?, r.get(4)?, r.get(5)?);
            Ok(NewTemplate {
                vector: from_blob(&r.get::<_, Vec<u8>>(0)?),
                source: format!("visitor {id}: camera {camera} track {track} at {seen} ms ({embedder} fused)"),
                face_px: r.get::<_, f64>(2)? as f32,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    if templates.is_empty() {
        return Err(VisitorError::NothingToEnroll(id));
    }
    let created = crate::gallery::enroll_in(&tx, name, embedder, &templates)?;
    tx.execute("DELETE FROM visitors WHERE id = ?1", [id.0])?;
    bump(&tx)?;
    tx.commit()?;
    Ok(Named { name: name.to_owned(), created, templates: templates.len() })
}

/// Merges visitor `from` into `into`: `into` takes its embeddings (keeping the best [`KEEP`]),
/// visits, cameras, suppressed count and time span, and stored events that named `from` now name
/// `into`; `from` is deleted. `into` keeps its own ignored flag.
pub fn merge(g: &mut Gallery, from: VisitorId, into: VisitorId) -> Result<VisitorSummary, VisitorError> {
    if from == into {
        return Err(VisitorError::SameVisitor(from));
    }
    merge_at(g.connection(), from, into).map_err(|e| e.locate(g))?;
    get(g, into)
}

fn merge_at(conn: &mut Connection, from: VisitorId, into: VisitorId) -> Result<(), VisitorError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for id in [from, into] {
        if !exists(&tx, id)? {
            return Err(VisitorError::Unknown(id));
        }
    }
    tx.execute(
        "UPDATE visitors SET
            visits = visits + (SELECT visits FROM visitors WHERE id = ?1),
            suppressed = suppressed + (SELECT suppressed FROM visitors WHERE id = ?1),
            first_seen_ms = MIN(first_seen_ms, (SELECT first_seen_ms FROM visitors WHERE id = ?1)),
            last_seen_ms = MAX(last_seen_ms, (SELECT last_seen_ms FROM visitors WHERE id = ?1))
         WHERE id = ?2",
        params![from.0, into.0],
    )?;
    tx.execute(
        "INSERT INTO visitor_cameras (visitor_id, camera, visits, last_seen_ms)
         SELECT ?2, camera, visits, last_seen_ms FROM visitor_cameras WHERE visitor_id = ?1 AND true
         ON CONFLICT (visitor_id, camera) DO UPDATE SET visits = visits + excluded.visits,
         last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
        params![from.0, into.0],
    )?;
    tx.execute("UPDATE visitor_embeddings SET visitor_id = ?2 WHERE visitor_id = ?1", params![from.0, into.0])?;
    prune(&tx, into.0)?;
    if events_table(&tx)? {
        tx.execute(
            "UPDATE events SET json = json_set(json, '$.visitor', ?2) WHERE json_extract(json, '$.visitor') = ?1",
            params![from.to_string(), into.to_string()],
        )?;
    }
    tx.execute("DELETE FROM visitors WHERE id = ?1", [from.0])?;
    bump(&tx)?;
    tx.commit()?;
    Ok(())
}

fn events_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')", [], |r| {
        r.get(0)
    })
}

/// Sets or clears a visitor's ignored flag (an ignored visitor's events are not sent, only counted).
pub fn set_ignored(g: &mut Gallery, id: VisitorId, ignored: bool) -> Result<VisitorSummary, VisitorError> {
    let changed = (|| {
        let tx = g.connection().transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("UPDATE visitors SET ignored = ?2 WHERE id = ?1", params![id.0, ignored])?;
        bump(&tx)?;
        tx.commit()?;
        Ok::<_, rusqlite::Error>(n)
    })()
    .map_err(|e| VisitorError::from(e).locate(g))?;
    if changed == 0 {
        return Err(VisitorError::Unknown(id));
    }
    get(g, id)
}

mod forget;
pub use forget::{enforce_retention, forget, within, Forgotten};

#[cfg(test)]
mod tests;
