use super::*;
use crate::embed::EMBEDDING_DIM;

fn id(sha: &str) -> EmbedderId {
    EmbedderId { name: "sface-2021dec".into(), sha256: sha.into() }
}

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[i] = 1.0;
    v
}

fn template(v: Vec<f32>) -> NewTemplate {
    NewTemplate { vector: v, source: "test".into(), face_px: 100.0 }
}

#[test]
fn enroll_list_rename_remove() {
    let e = id("aaaa");
    let mut g = Gallery::open_in_memory(Some(&e)).unwrap();
    assert!(g.enroll("Ada", &e, &[template(unit(0)), template(unit(1))]).unwrap());
    assert!(!g.enroll("Ada", &e, &[template(unit(2))]).unwrap(), "second enroll adds to Ada");
    g.enroll("Bob", &e, &[template(unit(3))]).unwrap();
    let list = g.list().unwrap();
    assert_eq!(list.iter().map(|i| (i.name.as_str(), i.templates)).collect::<Vec<_>>(), [("Ada", 3), ("Bob", 1)]);
    assert!(matches!(g.rename("Ada", "Bob"), Err(GalleryError::NameTaken(_))));
    g.rename("Ada", "Alice").unwrap();
    assert!(matches!(g.remove("Ada"), Err(GalleryError::UnknownIdentity(_))));
    g.remove("Alice").unwrap();
    assert_eq!(g.list().unwrap().len(), 1);
    let templates: i64 = g.conn.query_row("SELECT COUNT(*) FROM templates", [], |r| r.get(0)).unwrap();
    assert_eq!(templates, 1, "removing an identity removes its templates");
}

#[test]
fn a_failed_enroll_writes_nothing() {
    let e = id("aaaa");
    let mut g = Gallery::open_in_memory(Some(&e)).unwrap();
    let err = g.enroll("Eve", &e, &[template(unit(0)), template(vec![1.0; 3])]).unwrap_err();
    assert!(matches!(err, GalleryError::Dimension { .. }));
    assert!(g.list().unwrap().is_empty(), "neither the identity nor its first template may remain");
    assert!(matches!(g.enroll("  ", &e, &[template(unit(0))]), Err(GalleryError::BadName { .. })));
}

#[test]
fn snapshot_search_ranks_identities_by_their_best_template() {
    let e = id("aaaa");
    let mut g = Gallery::open_in_memory(Some(&e)).unwrap();
    g.enroll("Ada", &e, &[template(unit(0)), template(unit(1))]).unwrap();
    g.enroll("Bob", &e, &[template(unit(2))]).unwrap();
    let snap = g.snapshot().unwrap();
    assert_eq!((snap.identities(), snap.templates()), (2, 3));
    let mut probe = vec![0.0; EMBEDDING_DIM];
    probe[1] = 0.8;
    probe[2] = 0.6;
    let top = snap.search(&probe, 5);
    assert_eq!(top.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Ada", "Bob"]);
    assert!((top[0].score - 0.8).abs() < 1e-6 && (top[1].score - 0.6).abs() < 1e-6);
    assert_eq!(snap.search(&probe, 1).len(), 1);
    assert!(snap.search(&[1.0, 2.0], 1).is_empty(), "a probe of the wrong length matches nothing");
}

#[test]
fn a_gallery_of_another_embedder_is_refused_with_the_re_enroll_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut g = Gallery::open(&path, OpenMode::CreateIfMissing, Some(&id("aaaa"))).unwrap();
    g.enroll("Ada", &id("aaaa"), &[template(unit(0))]).unwrap();
    drop(g);
    let err = Gallery::open(&path, OpenMode::MustExist, Some(&id("bbbb"))).unwrap_err();
    assert!(matches!(err, GalleryError::ForeignEmbedder { .. }));
    assert!(err.to_string().contains("re-enroll"), "{err}");
    // Administration without an embedder still works on it.
    assert_eq!(Gallery::open(&path, OpenMode::MustExist, None).unwrap().list().unwrap().len(), 1);
}

#[cfg(unix)]
#[test]
fn a_new_gallery_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gallery.db");
    Gallery::open(&path, OpenMode::CreateIfMissing, None).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn corrupt_and_missing_galleries_fail_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = Gallery::open(&path, OpenMode::MustExist, None).unwrap_err();
    assert!(matches!(err, GalleryError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("re-enroll"));
    let missing = dir.path().join("none.db");
    let err = Gallery::open(&missing, OpenMode::MustExist, None).unwrap_err();
    assert!(matches!(err, GalleryError::Missing { .. }));
    assert!(!missing.exists(), "opening a missing gallery for reading must not create it");
}

#[test]
fn a_gallery_from_a_newer_farsight_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    drop(Gallery::open(&path, OpenMode::CreateIfMissing, None).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    let err = Gallery::open(&path, OpenMode::MustExist, None).unwrap_err();
    assert!(matches!(err, GalleryError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_foreign_digest_with_multibyte_characters_gives_the_message_not_a_panic() {
    let odd = EmbedderId { name: "other".into(), sha256: "é".repeat(20) };
    let mut g = Gallery::open_in_memory(None).unwrap();
    g.enroll("Ada", &odd, &[template(unit(0))]).unwrap();
    let err = g.check_embedder(&id("aaaa")).unwrap_err();
    assert!(err.to_string().contains("re-enroll"), "{err}");
}

#[test]
fn another_connections_changes_bump_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut writer = Gallery::open(&path, OpenMode::CreateIfMissing, None).unwrap();
    let reader = Gallery::open(&path, OpenMode::MustExist, None).unwrap();
    let (g0, v0) = (reader.generation().unwrap(), reader.data_version().unwrap());
    writer.enroll("ann", &id("a"), &[template(unit(1))]).unwrap();
    let g1 = reader.generation().unwrap();
    assert!(g1 > g0 && reader.data_version().unwrap() != v0);
    writer.rename("ann", "anna").unwrap();
    let g2 = reader.generation().unwrap();
    assert!(g2 > g1);
    writer.remove("anna").unwrap();
    assert!(reader.generation().unwrap() > g2);
    assert!(writer.remove("nobody").is_err());
}

#[test]
fn invisible_and_direction_characters_and_unknown_are_refused_as_names() {
    let e = id("aaaa");
    let mut g = Gallery::open_in_memory(Some(&e)).unwrap();
    for bad in
        ["Ada\u{200B}", "\u{202E}adA", "Unknown", "UNKNOWN", " Ada", "Ada ", "A\u{0}da", "\u{FEFF}Ada", "Ada\u{2066}"]
    {
        let err = g.enroll(bad, &e, &[template(unit(0))]).unwrap_err();
        assert!(matches!(err, GalleryError::BadName { .. }), "{bad:?}: {err}");
    }
    g.enroll("Ada", &e, &[template(unit(0))]).unwrap();
    assert!(matches!(g.rename("Ada", "Ada\u{202E}"), Err(GalleryError::BadName { .. })), "rename checks too");
    assert!(matches!(g.rename("Ada", "unknown"), Err(GalleryError::BadName { .. })));
    for good in ["Zoë Ångström", "李小龙", "O'Brien-Smith Jr.", "محمد"] {
        g.enroll(good, &e, &[template(unit(1))]).unwrap();
    }
    assert!(g.list().unwrap().iter().all(|i| !i.name.contains('\u{202E}')));
}

#[test]
fn a_ten_thousand_character_name_is_not_echoed_in_full() {
    let name = "x".repeat(10_000);
    let msg = check_name(&name).unwrap_err().to_string();
    assert!(msg.len() < 300 && msg.contains("10000 characters"), "{msg}");
}

#[test]
fn two_first_enrolls_racing_to_create_a_new_gallery_both_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("race-{round}.db"));
        let e = id("aaaa");
        let results: Vec<Result<bool, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (path, e) = (&path, &e);
                    s.spawn(move || {
                        let mut g = Gallery::open(path, OpenMode::CreateIfMissing, Some(e))
                            .map_err(|e| crate::error_chain(&e))?;
                        g.enroll(&format!("P{i}"), e, &[template(unit(i))]).map_err(|e| crate::error_chain(&e))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
        let g = Gallery::open(&path, OpenMode::MustExist, Some(&e)).unwrap();
        assert_eq!(g.list().unwrap().len(), 4);
    }
}

#[test]
fn a_gallery_in_a_missing_folder_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo").join("g.db");
    let err = Gallery::open(&path, OpenMode::CreateIfMissing, None).unwrap_err();
    assert!(matches!(err, GalleryError::NoFolder { .. }), "{err}");
    assert!(!dir.path().join("typo").exists(), "no folder may be created");
}

#[test]
fn another_programs_sqlite_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE recipes (id INTEGER PRIMARY KEY, name TEXT);").unwrap();
    drop(conn);
    let err = Gallery::open(&path, OpenMode::CreateIfMissing, None).unwrap_err();
    assert!(matches!(err, GalleryError::Foreign { .. }), "{err}");
    let conn = Connection::open(&path).unwrap();
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "nothing was added to the foreign database");
}

#[test]
fn mid_file_gallery_corruption_names_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let e = id("aaaa");
    {
        let mut g = Gallery::open(&path, OpenMode::CreateIfMissing, Some(&e)).unwrap();
        for i in 0..200 {
            g.enroll(&format!("P{i}"), &e, &[template(unit(i % EMBEDDING_DIM))]).unwrap();
        }
        g.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    }
    // Keep the header page intact, wreck the pages after it.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 4 * page, "{} bytes", bytes.len());
    for b in &mut bytes[2 * page..] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Gallery::open(&path, OpenMode::MustExist, Some(&e)).and_then(|g| g.snapshot().map(drop)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GalleryError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("g.db") && msg.contains("move it aside and re-enroll"), "{msg}");
}
