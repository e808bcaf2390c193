//! The gallery: enrolled identities and their face templates in SQLite (WAL, file mode 0600: it
//! holds biometric data). Every enroll, remove and rename is one transaction, so a crash never
//! leaves half an identity behind. Templates carry the embedder's name and sha256; a gallery made
//! by another embedder is refused at open with the instruction to re-enroll. Matching runs on an
//! immutable in-memory [`Snapshot`]: one contiguous, L2-normalised matrix.

mod schema;

use crate::embed::EmbedderId;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error(
        "gallery {path} does not exist: enroll someone first (`farsight enroll --gallery {path} --name NAME IMAGE...`)"
    )]
    Missing { path: PathBuf },
    #[error("cannot create gallery {path}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "the folder {dir} for gallery {path} does not exist: create it (or check --gallery for a typo; \
         `enroll --create-dir` creates it)"
    )]
    NoFolder { path: PathBuf, dir: PathBuf },
    #[error("gallery {path} is not a farsight gallery or is corrupt: move it aside and re-enroll")]
    Corrupt { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{path} is an SQLite database of another program (it has no farsight schema): give --gallery a new \
         file name"
    )]
    Foreign { path: PathBuf },
    #[error("the disk holding gallery {path} is full: nothing was written; free some space and try again")]
    DiskFull { path: PathBuf, source: rusqlite::Error },
    #[error("gallery {path}: database error")]
    Database { path: PathBuf, source: rusqlite::Error },
    #[error("gallery {path} has schema version {found}, newer than this farsight ({supported}): upgrade farsight")]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error(
        "gallery {path} holds templates made by embedder {found}, but this farsight embeds with {expected}: \
         templates of different models cannot be compared; re-enroll every identity into a new gallery"
    )]
    ForeignEmbedder { path: PathBuf, found: String, expected: String },
    #[error("template for {name:?} has {got} dimensions, the gallery's embedder makes {want}")]
    Dimension { name: String, got: usize, want: usize },
    #[error("no identity named {} in the gallery", shorten(.0))]
    UnknownIdentity(String),
    #[error("an identity named {} already exists", shorten(.0))]
    NameTaken(String),
    #[error("identity name {} is refused: {why}", shorten(.name))]
    BadName { name: String, why: &'static str },
    /// An SQLite error inside an operation, before [`Gallery`] names the file (never returned by
    /// a public method: they turn it into `Corrupt`, `DiskFull` or `Database`).
    #[error("gallery database error")]
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
        // Several processes opening a new gallery at once (two first enrolls, a daemon starting)
        // race for the switch to WAL and the schema set-up; SQLite answers some of those lock
        // upgrades with SQLITE_BUSY at once, without its busy handler (deadlock avoidance), so
        // the whole open is retried for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open_once(path, embedder) {
                Err(GalleryError::Database { source, .. })
                    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, embedder: Option<&EmbedderId>) -> Result<Self, GalleryError> {
        let corrupt = |source| sql_error(path, source);
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
        let corrupt = |source| sql_error(path, source);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(corrupt)?;
        let found = schema::version(&tx).map_err(corrupt)?;
        if found > schema::CURRENT_VERSION {
            return Err(GalleryError::TooNew { path: path.to_owned(), found, supported: schema::CURRENT_VERSION });
        }
        if found == 0 && schema::has_tables(&tx).map_err(corrupt)? {
            return Err(GalleryError::Foreign { path: path.to_owned() });
        }
        if found < schema::CURRENT_VERSION {
            schema::migrate(&tx, found).map_err(corrupt)?;
        }
        tx.commit().map_err(corrupt)?;
        let gallery = Self { conn, path: path.to_owned() };
        if let Some(id) = embedder {
            gallery.check_embedder(id).map_err(|e| gallery.locate(e))?;
        }
        Ok(gallery)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `templates` to identity `name` (created if new) in one transaction: either all are
    /// written or none. Returns whether the identity was new.
    pub fn enroll(
        &mut self,
        name: &str,
        embedder: &EmbedderId,
        templates: &[NewTemplate],
    ) -> Result<bool, GalleryError> {
        self.enroll_at(name, embedder, templates).map_err(|e| self.locate(e))
    }

    /// Every identity with its template count, by name.
    pub fn list(&self) -> Result<Vec<IdentitySummary>, GalleryError> {
        self.list_at().map_err(|e| self.locate(e))
    }

    /// Deletes an identity and all its templates.
    pub fn remove(&mut self, name: &str) -> Result<(), GalleryError> {
        self.remove_at(name).map_err(|e| self.locate(e))
    }

    /// Renames an identity; the new name must be free and pass [`check_name`].
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), GalleryError> {
        self.rename_at(from, to).map_err(|e| self.locate(e))
    }

    /// A number that changes whenever an enroll, remove or rename commits, in this process or
    /// another: a running pipeline compares it to decide when to reload its snapshot. (SQLite's
    /// `data_version` alone would also change on every event the SQLite sink writes.)
    pub fn generation(&self) -> Result<i64, GalleryError> {
        self.generation_at().map_err(|e| self.locate(e))
    }

    /// SQLite's `data_version`: changes when another connection commits anything. Cheap to poll;
    /// check [`Gallery::generation`] when it moves.
    pub fn data_version(&self) -> Result<i64, GalleryError> {
        self.data_version_at().map_err(|e| self.locate(e))
    }

    /// Loads every template into an immutable matrix for matching.
    pub fn snapshot(&self) -> Result<Snapshot, GalleryError> {
        self.snapshot_at().map_err(|e| self.locate(e))
    }

    /// The database connection, for the visitors' tables in the same file (`crate::visitors`).
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Checks that templates of `embedder` may be added (before a transaction that adds some).
    pub(crate) fn check_embedder_for(&self, embedder: &EmbedderId) -> Result<(), GalleryError> {
        self.check_embedder(embedder).map_err(|e| self.locate(e))
    }

    /// Names the file in an SQLite error (and says what to do about a damaged file or a full disk).
    pub(crate) fn locate(&self, e: GalleryError) -> GalleryError {
        match e {
            GalleryError::Sql(source) => sql_error(&self.path, source),
            other => other,
        }
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

    fn enroll_at(
        &mut self,
        name: &str,
        embedder: &EmbedderId,
        templates: &[NewTemplate],
    ) -> Result<bool, GalleryError> {
        check_name(name)?;
        self.check_embedder(embedder)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let created = enroll_in(&tx, name, embedder, templates)?;
        tx.commit()?;
        Ok(created)
    }

    fn list_at(&self) -> Result<Vec<IdentitySummary>, GalleryError> {
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

    fn remove_at(&mut self, name: &str) -> Result<(), GalleryError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM identities WHERE name = ?1", [name])? == 0 {
            return Err(GalleryError::UnknownIdentity(name.to_owned()));
        }
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn rename_at(&mut self, from: &str, to: &str) -> Result<(), GalleryError> {
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

    fn generation_at(&self) -> Result<i64, GalleryError> {
        let v: Option<String> =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0)).optional()?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    fn data_version_at(&self) -> Result<i64, GalleryError> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn snapshot_at(&self) -> Result<Snapshot, GalleryError> {
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The most characters an identity name may have.
pub const MAX_NAME_CHARS: usize = 200;

/// Checks a new identity name (enroll, rename, the HTTP API): 1-200 characters, no control or
/// invisible characters (zero-width, bidirectional overrides: a name must read as it is
/// stored), no leading or trailing space, and not "unknown" in any case (what events report for
/// a face that matches nobody). Pure: call it before any work.
pub fn check_name(name: &str) -> Result<(), GalleryError> {
    let why = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("it is longer than 200 characters")
    } else if name.trim() != name {
        Some("it starts or ends with a space")
    } else if name.chars().any(char::is_control) {
        Some("it holds a control character")
    } else if name.chars().any(is_invisible) {
        Some("it holds an invisible or text-direction character (such as U+200B or U+202E)")
    } else if name.eq_ignore_ascii_case(crate::event::UNKNOWN) {
        Some("\"unknown\" is what events say of a face that matches nobody")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(GalleryError::BadName { name: name.to_owned(), why }),
    }
}

/// Unicode format characters (category Cf: zero-width spaces and joiners, bidirectional marks,
/// embeddings, overrides and isolates, the BOM, invisible operators, tag characters), line and
/// paragraph separators, and the interlinear annotation characters.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x08E2
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// A name for a message: quoted, and cut to 60 characters (a 10,000-character name is not
/// echoed in full).
pub fn shorten(name: &str) -> String {
    const SHOWN: usize = 60;
    let n = name.chars().count();
    if n <= SHOWN {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(SHOWN).collect();
        format!("{head:?}... ({n} characters)")
    }
}

/// An SQLite error with the gallery's path, and for a damaged file or a full disk, what to do.
fn sql_error(path: &Path, source: rusqlite::Error) -> GalleryError {
    use rusqlite::ErrorCode;
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            GalleryError::Corrupt { path: path.to_owned(), source }
        }
        Some(ErrorCode::DiskFull) => GalleryError::DiskFull { path: path.to_owned(), source },
        // SQLite reports a full disk met while growing the -shm file (tmpfs, memory-mapped) as an
        // I/O error: ask the file system.
        Some(ErrorCode::SystemIoFailure) if folder_is_full(path) => {
            GalleryError::DiskFull { path: path.to_owned(), source }
        }
        _ => GalleryError::Database { path: path.to_owned(), source },
    }
}

/// Whether the file system holding `path` has less than 64 KiB left for this process.
fn folder_is_full(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 64 * 1024
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Creates an empty file readable and writable by its owner only (SQLite gives its -wal and -shm
/// files the same permissions).
/// Creates an empty file readable and writable by its owner only (SQLite gives its -wal and -shm
/// files the same permissions). The folder must exist: a typo in `--gallery` must not start a new
/// gallery somewhere else. Two processes creating the same new gallery at once both succeed: the
/// loser of `create_new` finds the file there and opens it (schema set-up is one transaction).
fn create_private_file(path: &Path) -> Result<(), GalleryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(GalleryError::NoFolder { path: path.to_owned(), dir: dir.to_owned() });
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(GalleryError::Create { path: path.to_owned(), source }),
    }
}

/// Adds `templates` to identity `name` (created if new) inside the caller's transaction; the
/// caller checked the name and the embedder. Returns whether the identity was new.
pub(crate) fn enroll_in(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    embedder: &EmbedderId,
    templates: &[NewTemplate],
) -> Result<bool, GalleryError> {
    let now = unix_now();
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
    bump_generation(tx)?;
    Ok(existing.is_none())
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
