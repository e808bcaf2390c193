//! The gallery's SQLite schema and its stepwise migrations. The version lives in the `meta` table
//! (`schema_version`); migration `i` takes a database from version `i` to `i + 1`, inside the
//! caller's transaction, so a crash mid-migration leaves the old version intact.

use rusqlite::{Connection, OptionalExtension};

/// Each entry migrates from its index to index + 1. Append, never edit a released step.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: identities and their templates, each template tagged with the embedder that made it.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
     CREATE TABLE identities (
         id INTEGER PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE templates (
         id INTEGER PRIMARY KEY,
         identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
         embedder TEXT NOT NULL,
         embedder_sha256 TEXT NOT NULL,
         dim INTEGER NOT NULL,
         vector BLOB NOT NULL,
         source TEXT NOT NULL,
         face_px REAL NOT NULL,
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX templates_by_identity ON templates(identity_id);",
    // 1 -> 2: the SQLite sink's events (one row per track event; `json` holds the whole event).
    "CREATE TABLE events (
         id INTEGER PRIMARY KEY,
         camera TEXT NOT NULL,
         track INTEGER NOT NULL,
         event TEXT NOT NULL CHECK (event IN ('match', 'unknown')),
         identity TEXT NOT NULL,
         score REAL,
         is_update INTEGER NOT NULL,
         first_seen_ms INTEGER NOT NULL,
         last_seen_ms INTEGER NOT NULL,
         frames_seen INTEGER NOT NULL,
         face_px REAL NOT NULL,
         json TEXT NOT NULL
     ) STRICT;
     CREATE INDEX events_by_last_seen ON events(last_seen_ms);",
    // 2 -> 3: visitors (unknown faces clustered into strangers with a stable id), their kept
    // embeddings (the best few by quality, with the crop farsight saved of each, if any) and the
    // cameras each was seen on. Deleting a visitor deletes the rest.
    "CREATE TABLE visitors (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         first_seen_ms INTEGER NOT NULL,
         last_seen_ms INTEGER NOT NULL,
         visits INTEGER NOT NULL,
         ignored INTEGER NOT NULL DEFAULT 0,
         suppressed INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX visitors_by_last_seen ON visitors(last_seen_ms);
     CREATE TABLE visitor_embeddings (
         id INTEGER PRIMARY KEY,
         visitor_id INTEGER NOT NULL REFERENCES visitors(id) ON DELETE CASCADE,
         embedder TEXT NOT NULL,
         dim INTEGER NOT NULL,
         vector BLOB NOT NULL,
         quality REAL NOT NULL,
         face_px REAL NOT NULL,
         camera TEXT NOT NULL,
         track INTEGER NOT NULL,
         seen_ms INTEGER NOT NULL,
         crop TEXT
     ) STRICT;
     CREATE INDEX visitor_embeddings_by_visitor ON visitor_embeddings(visitor_id);
     CREATE TABLE visitor_cameras (
         visitor_id INTEGER NOT NULL REFERENCES visitors(id) ON DELETE CASCADE,
         camera TEXT NOT NULL,
         visits INTEGER NOT NULL,
         last_seen_ms INTEGER NOT NULL,
         PRIMARY KEY (visitor_id, camera)
     ) STRICT;",
];

/// The schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether the database holds any table (a version-0 database with tables belongs to another
/// program and must not be migrated into a gallery).
pub fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table')", [], |r| r.get(0))
}

/// The stored schema version; 0 for an empty database.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let v: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Applies every migration after `from`, then records the new version. Call inside a transaction.
pub fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    for step in MIGRATIONS.iter().skip(from.max(0) as usize) {
        conn.execute_batch(step)?;
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [CURRENT_VERSION.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_to_the_current_version() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        migrate(&conn, 0).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        // Migrating an up-to-date database is a no-op.
        migrate(&conn, CURRENT_VERSION).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        let tables: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 8, "meta, identities, templates, events, three visitor tables, sqlite_sequence");
    }

    #[test]
    fn migrates_a_version_1_gallery_keeping_its_identities() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')", []).unwrap();
        conn.execute("INSERT INTO identities (name, created_at) VALUES ('ada', 0)", []).unwrap();
        assert_eq!(version(&conn).unwrap(), 1);
        migrate(&conn, 1).unwrap();
        assert_eq!(version(&conn).unwrap(), CURRENT_VERSION);
        let names: i64 = conn.query_row("SELECT COUNT(*) FROM identities", [], |r| r.get(0)).unwrap();
        assert_eq!(names, 1);
        let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(events, 0);
    }

    #[test]
    fn migrates_a_version_2_gallery_to_visitors_keeping_identities_and_events() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')", []).unwrap();
        conn.execute("INSERT INTO identities (name, created_at) VALUES ('ada', 0)", []).unwrap();
        conn.execute(
            "INSERT INTO events (camera, track, event, identity, is_update, first_seen_ms, last_seen_ms, frames_seen,
             face_px, json) VALUES ('door', 1, 'unknown', 'unknown', 0, 1, 2, 3, 20.0, '{}')",
            [],
        )
        .unwrap();
        assert_eq!(version(&conn).unwrap(), 2);
        migrate(&conn, 2).unwrap();
        assert_eq!(version(&conn).unwrap(), 3);
        let kept: (i64, i64) = conn
            .query_row("SELECT (SELECT COUNT(*) FROM identities), (SELECT COUNT(*) FROM events)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, (1, 1));
        // The new tables work, and a visitor's rows go with it.
        conn.execute("INSERT INTO visitors (first_seen_ms, last_seen_ms, visits) VALUES (1, 2, 1)", []).unwrap();
        conn.execute(
            "INSERT INTO visitor_embeddings (visitor_id, embedder, dim, vector, quality, face_px, camera, track, seen_ms)
             VALUES (1, 'sface', 1, x'00000000', 0.5, 20.0, 'door', 1, 2)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO visitor_cameras (visitor_id, camera, visits, last_seen_ms) VALUES (1, 'door', 1, 2)",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM visitors WHERE id = 1", []).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM visitor_embeddings) + (SELECT COUNT(*) FROM visitor_cameras)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_forgotten_visitors_id_is_never_given_to_a_new_stranger() {
        // Ids are what operators and stored events call a stranger by: `v2` named or forgotten
        // must not come back as somebody else (it did, without AUTOINCREMENT).
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        migrate(&tx, 0).unwrap();
        tx.commit().unwrap();
        let add = |c: &Connection| {
            c.execute("INSERT INTO visitors (first_seen_ms, last_seen_ms, visits) VALUES (1, 2, 1)", []).unwrap();
            c.last_insert_rowid()
        };
        assert_eq!((add(&conn), add(&conn)), (1, 2));
        conn.execute("DELETE FROM visitors WHERE id = 2", []).unwrap();
        assert_eq!(add(&conn), 3);
    }
}
