//! The gallery: enrolled identities and their face templates in SQLite (WAL, file mode 0600: it
//! holds biometric data). Every enroll, remove and rename is one transaction, so a crash never
//! leaves half an identity behind. Templates carry the embedder's name and sha256; a gallery made
//! by another embedder is refused at open with the instruction to re-enroll. Matching runs on an
//! immutable in-memory [`Snapshot`]: one contiguous, L2-normalised matrix.

mod schema;

use crate::embed::EmbedderId;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error(
        "gallery {path} does not exist: enroll someone first (`farsight enroll --gallery {path} --name NAME IMAGE...`)"
    )]
    Missing { path: PathBuf },
    #[error("cannot create gallery {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("gallery {path} is not a farsight gallery or is corrupt ({source}): move it aside and re-enroll")]
    Corrupt { path: PathBuf, source: rusqlite::Error },
    #[error("gallery {path} has schema version {found}, newer than this farsight ({supported}): upgrade farsight")]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error(
        "gallery {path} holds templates made by embedder {found}, but this farsight embeds with {expected}: \
         templates of different models cannot be compared; re-enroll every identity into a new gallery"
    )]
    ForeignEmbedder { path: PathBuf, found: String, expected: String },
    #[error("template for {name:?} has {got} dimensions, the gallery's embedder makes {want}")]
    Dimension { name: String, got: usize, want: usize },
    #[error("no identity named {0:?} in the gallery")]
    UnknownIdentity(String),
    #[error("an identity named {0:?} already exists")]
    NameTaken(String),
    #[error("identity names must be 1-200 printable characters and not \"unknown\", got {0:?}")]
    BadName(String),
    #[error("gallery database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A template to enroll: an embedding and where it came from.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub vector: Vec<f32>,
    /// The image (and face) it was taken from, for `gallery list` and audits.
    pub source: String,
    /// Native face size in pixels.
    pub face_px: f32,
}

/// One identity as `gallery list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdentitySummary {
    pub name: String,
    pub templates: usize,
    pub embedders: Vec<String>,
}

/// The gallery database.
#[derive(Debug)]
pub struct Gallery {
    conn: Connection,
    path: PathBuf,
}

/// Whether [`Gallery::open`] may create a new database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
}

impl Gallery {
    /// Opens (or creates, mode 0600) the gallery at `path`, migrates it to the current schema and,
    /// when `embedder` is given, refuses it if any template was made by another embedder.
    pub fn open(path: &Path, mode: OpenMode, embedder: Option<&EmbedderId>) -> Result<Self, GalleryError> {
        if !path.exists() {
            if mode == OpenMode::MustExist {
                return Err(GalleryError::Missing { path: path.to_owned() });
            }
            create_private_file(path)?;
        }
        let corrupt = |source| GalleryError::Corrupt { path: path.to_owned(), source };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(corrupt)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(corrupt)?;
        // The first statement that reads the file is where a non-database is detected.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(corrupt)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(corrupt)?;
        Self::init(conn, path, embedder)
    }

    /// An in-memory gallery (tests, evaluation).
    pub fn open_in_memory(embedder: Option<&EmbedderId>) -> Result<Self, GalleryError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Self::init(conn, Path::new(":memory:"), embedder)
    }

    fn init(mut conn: Connection, path: &Path, embedder: Option<&EmbedderId>) -> Result<Self, GalleryError> {
        let corrupt = |source| GalleryError::Corrupt { path: path.to_owned(), source };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(corrupt)?;
        let found = schema::version(&tx).map_err(corrupt)?;
        if found > schema::CURRENT_VERSION {
            return Err(GalleryError::TooNew { path: path.to_owned(), found, supported: schema::CURRENT_VERSION });
        }
        if found < schema::CURRENT_VERSION {
            schema::migrate(&tx, found).map_err(corrupt)?;
        }
        tx.commit().map_err(corrupt)?;
        let gallery = Self { conn, path: path.to_owned() };
        if let Some(id) = embedder {
            gallery.check_embedder(id)?;
        }
        Ok(gallery)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_embedder(&self, id: &EmbedderId) -> Result<(), GalleryError> {
        let foreign: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT embedder, embedder_sha256 FROM templates
                 WHERE embedder != ?1 OR embedder_sha256 != ?2 LIMIT 1",
                params![id.name, id.sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match foreign {
            None => Ok(()),
            Some((name, sha)) => Err(GalleryError::ForeignEmbedder {
                path: self.path.clone(),
                found: format!("{name} (sha256 {})", short(&sha)),
                expected: format!("{} (sha256 {})", id.name, short(&id.sha256)),
            }),
        }
    }

    /// Adds `templates` to identity `name` (created if new) in one transaction: either all are
    /// written or none. Returns whether the identity was new.
    pub fn enroll(
        &mut self,
        name: &str,
        embedder: &EmbedderId,
        templates: &[NewTemplate],
    ) -> Result<bool, GalleryError> {
        check_name(name)?;
        self.check_embedder(embedder)?;
        let now = unix_now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<i64> =
            tx.query_row("SELECT id FROM identities WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                tx.execute("INSERT INTO identities (name, created_at) VALUES (?1, ?2)", params![name, now])?;
                tx.last_insert_rowid()
            }
        };
        for t in templates {
            if t.vector.len() != crate::embed::EMBEDDING_DIM {
                return Err(GalleryError::Dimension {
                    name: name.to_owned(),
                    got: t.vector.len(),
                    want: crate::embed::EMBEDDING_DIM,
                });
            }
            let blob: Vec<u8> = t.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            tx.execute(
                "INSERT INTO templates (identity_id, embedder, embedder_sha256, dim, vector, source, face_px, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![id, embedder.name, embedder.sha256, t.vector.len() as i64, blob, t.source, t.face_px as f64, now],
            )?;
        }
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(existing.is_none())
    }

    /// Every identity with its template count, by name.
    pub fn list(&self) -> Result<Vec<IdentitySummary>, GalleryError> {
        let mut stmt = self.conn.prepare(
            "SELECT i.name, COUNT(t.id), COALESCE(GROUP_CONCAT(DISTINCT t.embedder), '')
             FROM identities i LEFT JOIN templates t ON t.identity_id = i.id
             GROUP BY i.id ORDER BY i.name",
        )?;
        let rows = stmt.query_map([], |r| {
            let embedders: String = r.get(2)?;
            Ok(IdentitySummary {
                name: r.get(0)?,
                templates: r.get::<_, i64>(1)? as usize,
                embedders: embedders.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an identity and all its templates.
    pub fn remove(&mut self, name: &str) -> Result<(), GalleryError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM identities WHERE name = ?1", [name])? == 0 {
            return Err(GalleryError::UnknownIdentity(name.to_owned()));
        }
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Renames an identity; the new name must be free.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), GalleryError> {
        check_name(to)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM identities WHERE name = ?1)", [to], |r| r.get(0))?;
        if taken {
            return Err(GalleryError::NameTaken(to.to_owned()));
        }
        if tx.execute("UPDATE identities SET name = ?2 WHERE name = ?1", [from, to])? == 0 {
            return Err(GalleryError::UnknownIdentity(from.to_owned()));
        }
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// A number that changes whenever an enroll, remove or rename commits, in this process or
    /// another: a running pipeline compares it to decide when to reload its snapshot. (SQLite's
    /// `data_version` alone would also change on every event the SQLite sink writes.)
    pub fn generation(&self) -> Result<i64, GalleryError> {
        let v: Option<String> =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0)).optional()?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// SQLite's `data_version`: changes when another connection commits anything. Cheap to poll;
    /// check [`Gallery::generation`] when it moves.
    pub fn data_version(&self) -> Result<i64, GalleryError> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Loads every template into an immutable matrix for matching.
    pub fn snapshot(&self) -> Result<Snapshot, GalleryError> {
        let dim = crate::embed::EMBEDDING_DIM;
        let mut stmt = self.conn.prepare(
            "SELECT i.name, t.vector FROM templates t JOIN identities i ON i.id = t.identity_id ORDER BY i.name, t.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut snap = Snapshot { dim, names: Vec::new(), owner: Vec::new(), matrix: Vec::new() };
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            if blob.len() != dim * 4 {
                return Err(GalleryError::Dimension { name, got: blob.len() / 4, want: dim });
            }
            if snap.names.last() != Some(&name) {
                snap.names.push(name);
            }
            snap.owner.push(snap.names.len() - 1);
            snap.matrix.extend(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        Ok(snap)
    }
}

/// An identity and its best cosine similarity to a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub name: String,
    pub score: f32,
}

/// Immutable in-memory copy of the gallery's templates: `matrix` is row-major, one
/// L2-normalised row per template, `owner[row]` indexes `names`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    dim: usize,
    names: Vec<String>,
    owner: Vec<usize>,
    matrix: Vec<f32>,
}

impl Snapshot {
    pub fn identities(&self) -> usize {
        self.names.len()
    }

    pub fn templates(&self) -> usize {
        self.owner.len()
    }

    /// The `k` identities most similar to `probe` (each scored by its best template), best first.
    pub fn search(&self, probe: &[f32], k: usize) -> Vec<Candidate> {
        let mut best = vec![f32::NEG_INFINITY; self.names.len()];
        if self.dim == 0 || probe.len() != self.dim {
            return Vec::new();
        }
        for (row, &who) in self.matrix.chunks_exact(self.dim).zip(&self.owner) {
            let s = crate::embed::cosine(row, probe);
            if s > best[who] {
                best[who] = s;
            }
        }
        let mut scored: Vec<Candidate> = best
            .into_iter()
            .enumerate()
            .filter(|(_, s)| s.is_finite())
            .map(|(i, score)| Candidate { name: self.names[i].clone(), score })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(k);
        scored
    }
}

/// The first 12 characters of a stored digest, for messages. By characters, not bytes: a foreign
/// database may hold anything in that column, and a message must never panic.
fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

fn check_name(name: &str) -> Result<(), GalleryError> {
    // "unknown" is what events report for a face that matches nobody.
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 200
        && !name.chars().any(char::is_control)
        && name.trim() != crate::event::UNKNOWN;
    if ok {
        Ok(())
    } else {
        Err(GalleryError::BadName(name.to_owned()))
    }
}

/// Creates an empty file readable and writable by its owner only (SQLite gives its -wal and -shm
/// files the same permissions).
fn create_private_file(path: &Path) -> Result<(), GalleryError> {
    let err = |source| GalleryError::Create { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map(drop).map_err(err)
}

/// Counts a change of identities or templates (see [`Gallery::generation`]); inside the change's
/// transaction, so readers never see the new generation without the change.
fn bump_generation(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
