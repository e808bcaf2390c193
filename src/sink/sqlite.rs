//! The SQLite sink: one row per event in the gallery database's `events` table (gallery schema
//! version 2), each insert its own transaction. The sink opens the gallery once through
//! [`Gallery::open`] (which creates it with mode 0600 and migrates it), then writes through a
//! connection of its own (WAL, busy timeout) so enrolling and matching never wait on it for long.
//! Retention deletes rows older than `retention_days` and, oldest first, rows beyond
//! `max_events`; it runs at start, every [`RETENTION_EVERY`] inserts and at flush, so between two
//! passes the table may hold up to `RETENTION_EVERY - 1` rows more than `max_events`.

use super::{EventSink, SinkError};
use crate::config::SqliteSinkConfig;
use crate::event::{TrackDecision, TrackEvent};
use crate::gallery::{Gallery, OpenMode};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NAME: &str = "sqlite";

/// Retention runs once per this many inserts (and at start and flush), not on every insert.
pub const RETENTION_EVERY: u64 = 100;

/// Writes events into the gallery database's `events` table.
pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    config: SqliteSinkConfig,
    since_retention: u64,
}

impl SqliteSink {
    /// Opens (creating and migrating when needed) the gallery at `gallery` and applies retention.
    pub fn open(gallery: &Path, config: &SqliteSinkConfig) -> Result<Self, SinkError> {
        let config_err = |message: String| SinkError::Config { sink: NAME, message };
        // Creates the file 0600 and brings the schema to the version that has the events table.
        drop(Gallery::open(gallery, OpenMode::CreateIfMissing, None).map_err(|e| config_err(e.to_string()))?);
        let sql_err = |e: rusqlite::Error| config_err(format!("gallery {}: {e}", gallery.display()));
        let conn =
            Connection::open_with_flags(gallery, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sql_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err)?;
        let mut sink = Self { conn, path: gallery.to_owned(), config: config.clone(), since_retention: 0 };
        sink.retain().map_err(|e| config_err(format!("retention on {}: {e}", gallery.display())))?;
        Ok(sink)
    }

    /// The gallery database this sink writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes rows past the age and count limits. Returns how many it deleted.
    pub fn retain(&mut self) -> Result<usize, SinkError> {
        self.since_retention = 0;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
        let mut deleted = 0;
        if self.config.retention_days > 0 {
            let cutoff = now_ms().saturating_sub(u64::from(self.config.retention_days) * 86_400_000);
            deleted += tx.execute("DELETE FROM events WHERE last_seen_ms < ?1", [to_i64(cutoff)]).map_err(classify)?;
        }
        deleted += tx
            .execute(
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [to_i64(self.config.max_events)],
            )
            .map_err(classify)?;
        tx.commit().map_err(classify)?;
        if deleted > 0 {
            log::debug!("sink sqlite: retention deleted {deleted} events");
        }
        Ok(deleted)
    }

    fn insert(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        let json = serde_json::to_string(event)
            .map_err(|e| SinkError::Permanent { sink: NAME, message: format!("cannot encode the event: {e}") })?;
        let decision = match event.event {
            TrackDecision::Match => "match",
            TrackDecision::Unknown => "unknown",
        };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
        tx.execute(
            "INSERT INTO events (camera, track, event, identity, score, is_update, first_seen_ms, last_seen_ms,
                                 frames_seen, face_px, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                event.camera,
                to_i64(event.track),
                decision,
                event.identity,
                event.score.map(f64::from),
                event.update,
                to_i64(event.first_seen_ms),
                to_i64(event.last_seen_ms),
                event.frames_seen,
                f64::from(event.best_shot.face_px),
                json,
            ],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)
    }
}

impl EventSink for SqliteSink {
    fn name(&self) -> &str {
        NAME
    }

    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        self.insert(event)?;
        self.since_retention += 1;
        if self.since_retention >= RETENTION_EVERY {
            // The event is stored; a failed clean-up is retried at the next pass, not redelivered.
            if let Err(e) = self.retain() {
                log::warn!("sink sqlite: retention: {e}");
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.retain().map(drop)
    }
}

/// Which stored events to read back ([`query`]): every filter is optional; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub camera: Option<String>,
    pub identity: Option<String>,
    /// `"match"` or `"unknown"`.
    pub kind: Option<String>,
    /// Events whose visit was last seen at or after this time (Unix milliseconds).
    pub since_ms: Option<u64>,
    /// Events whose visit was last seen before this time (Unix milliseconds).
    pub until_ms: Option<u64>,
    pub limit: u32,
    pub offset: u64,
}

/// Reads stored events (each the event's own JSON, as the sinks received it), newest first, with
/// its row id. For readers with a connection of their own (the HTTP API), never the sink's.
pub fn query(conn: &Connection, q: &EventQuery) -> rusqlite::Result<Vec<(i64, serde_json::Value)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, json FROM events
         WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR identity = ?2) AND (?3 IS NULL OR event = ?3)
           AND (?4 IS NULL OR last_seen_ms >= ?4) AND (?5 IS NULL OR last_seen_ms < ?5)
         ORDER BY id DESC LIMIT ?6 OFFSET ?7",
    )?;
    let rows = stmt.query_map(
        params![
            q.camera,
            q.identity,
            q.kind,
            q.since_ms.map(to_i64),
            q.until_ms.map(to_i64),
            i64::from(q.limit),
            to_i64(q.offset)
        ],
        |r| {
            let json: String = r.get(1)?;
            let value = serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json));
            Ok((r.get(0)?, value))
        },
    )?;
    rows.collect()
}

/// Events stored after row `after` (oldest first, at most `limit`): what a reader tailing the
/// table has not seen yet.
pub fn newer_than(conn: &Connection, after: i64, limit: u32) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached("SELECT id, json FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(params![after, i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// A locked or busy database, a full disk or an I/O error may pass; anything else will not.
fn classify(e: rusqlite::Error) -> SinkError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull | ErrorCode::SystemIoFailure)
    );
    let message = e.to_string();
    if transient {
        SinkError::Transient { sink: NAME, message }
    } else {
        SinkError::Permanent { sink: NAME, message }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::tests::event;

    fn rows(path: &Path) -> Vec<(i64, String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut st = conn.prepare("SELECT track, camera, json FROM events ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn creates_a_private_gallery_and_stores_each_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gallery.db");
        let mut sink = SqliteSink::open(&path, &SqliteSinkConfig::default()).unwrap();
        sink.deliver(&event("door", 7)).unwrap();
        sink.flush().unwrap();
        let got = rows(&path);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.as_str()), (7, "door"));
        let json: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
        assert_eq!(json["track"], 7);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn stored_events_read_back_filtered_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let mut sink = SqliteSink::open(&path, &SqliteSinkConfig::default()).unwrap();
        for (camera, track) in [("door", 1), ("yard", 2), ("door", 3)] {
            sink.deliver(&event(camera, track)).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let tracks = |q: &EventQuery| -> Vec<u64> {
            query(&conn, q).unwrap().iter().map(|(_, e)| e["track"].as_u64().unwrap()).collect()
        };
        let all = EventQuery { limit: 10, ..Default::default() };
        assert_eq!(tracks(&all), [3, 2, 1]);
        assert_eq!(tracks(&EventQuery { camera: Some("door".into()), ..all.clone() }), [3, 1]);
        assert_eq!(tracks(&EventQuery { limit: 1, offset: 1, ..all.clone() }), [2]);
        assert_eq!(tracks(&EventQuery { until_ms: Some(0), ..all.clone() }), Vec::<u64>::new());
        let ids: Vec<i64> = newer_than(&conn, 1, 10).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn retention_by_age_deletes_old_events_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let config = SqliteSinkConfig { retention_days: 1, max_events: 100 };
        let mut sink = SqliteSink::open(&path, &config).unwrap();
        let mut old = event("door", 1);
        old.last_seen_ms = now_ms() - 2 * 86_400_000;
        sink.deliver(&old).unwrap();
        sink.deliver(&event("door", 2)).unwrap();
        drop(sink);
        let sink = SqliteSink::open(&path, &config).unwrap();
        drop(sink);
        let tracks: Vec<i64> = rows(&path).into_iter().map(|r| r.0).collect();
        assert_eq!(tracks, vec![2]);
    }
}
