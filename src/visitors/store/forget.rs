//! Forgetting visitors, by request or by retention: their rows, the stored events that name them,
//! and the crop files farsight wrote of them (only `farsight-*.png` files in a folder farsight
//! marked as its crops folder are ever deleted).

use super::{bump, events_table, exists, VisitorError, VisitorId};
use crate::gallery::Gallery;
use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What forgetting deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forgotten {
    pub id: String,
    /// Stored events (the SQLite sink's rows) that named the visitor.
    pub events: usize,
    /// Crop files farsight had written of the visitor's faces.
    pub crops: usize,
}

/// Forgets a visitor: its rows, the stored events that name it, and (after the transaction
/// commits) the crop files farsight wrote of it, kept embeddings' and events' alike. Only files
/// named `farsight-*.png` in a folder farsight marked as its crops folder are deleted.
pub fn forget(g: &mut Gallery, id: VisitorId) -> Result<Forgotten, VisitorError> {
    let (events, crops) = forget_at(g.connection(), &[id]).map_err(|e| e.locate(g))?;
    if events.is_empty() {
        return Err(VisitorError::Unknown(id));
    }
    Ok(Forgotten { id: id.to_string(), events: events[0], crops: delete_crops(&crops) })
}

/// Deletes visitors with their events; returns, per visitor found (none for one that is not
/// there), the events deleted, and every crop file named.
fn forget_at(conn: &mut Connection, ids: &[VisitorId]) -> Result<(Vec<usize>, Vec<PathBuf>), VisitorError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let with_events = events_table(&tx)?;
    let (mut counts, mut crops) = (Vec::new(), Vec::new());
    for &id in ids {
        if !exists(&tx, id)? {
            continue;
        }
        let mut stmt = tx.prepare("SELECT crop FROM visitor_embeddings WHERE visitor_id = ?1 AND crop IS NOT NULL")?;
        crops.extend(stmt.query_map([id.0], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
        drop(stmt);
        let mut events = 0;
        if with_events {
            let tag = id.to_string();
            let mut stmt = tx.prepare(
                "SELECT json_extract(json, '$.best_shot.crop') FROM events
                 WHERE json_extract(json, '$.visitor') = ?1 AND json_extract(json, '$.best_shot.crop') IS NOT NULL",
            )?;
            crops.extend(stmt.query_map([&tag], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
            drop(stmt);
            events = tx.execute("DELETE FROM events WHERE json_extract(json, '$.visitor') = ?1", [&tag])?;
        }
        tx.execute("DELETE FROM visitors WHERE id = ?1", [id.0])?;
        counts.push(events);
    }
    if !counts.is_empty() {
        bump(&tx)?;
    }
    tx.commit()?;
    crops.sort();
    crops.dedup();
    Ok((counts, crops.into_iter().map(PathBuf::from).collect()))
}

/// Deletes crop files farsight wrote (see [`forget`]); returns how many were deleted.
fn delete_crops(paths: &[PathBuf]) -> usize {
    let mut deleted = 0;
    for p in paths {
        let ours =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("farsight-") && n.ends_with(".png"))
                && p.parent().is_some_and(|d| d.join(crate::pipeline::CROPS_MARKER).is_file())
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
        if !ours {
            continue;
        }
        match std::fs::remove_file(p) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("visitors: cannot delete crop {}: {e}", p.display()),
        }
    }
    deleted
}

/// Retention: forgets visitors last seen more than `max_age_days` before `now_ms`, then the
/// least recently seen beyond `max_count`. Returns how many were forgotten.
pub fn enforce_retention(
    g: &mut Gallery,
    max_age_days: u32,
    max_count: usize,
    now_ms: i64,
) -> Result<usize, VisitorError> {
    let conn = g.connection();
    let cutoff = now_ms.saturating_sub(i64::from(max_age_days) * 86_400_000);
    let ids = (|| {
        let mut stmt = conn.prepare(
            "SELECT id FROM visitors WHERE last_seen_ms < ?1
             UNION SELECT id FROM (SELECT id FROM visitors ORDER BY last_seen_ms DESC, id DESC LIMIT -1 OFFSET ?2)",
        )?;
        let ids: rusqlite::Result<Vec<VisitorId>> =
            stmt.query_map(params![cutoff, max_count as i64], |r| r.get(0).map(VisitorId))?.collect();
        ids
    })()
    .map_err(|e| VisitorError::from(e).locate(g))?;
    if ids.is_empty() {
        return Ok(0);
    }
    let (counts, crops) = forget_at(g.connection(), &ids).map_err(|e| e.locate(g))?;
    delete_crops(&crops);
    Ok(counts.len())
}

/// Whether `path` is inside `dir` (for serving a best shot only from the crops folder).
pub fn within(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}
