//! The fuzz corpus as regression tests: every seed in `fuzz/corpus/<target>/` and every fixed
//! crasher in `fuzz/regressions/<target>/` goes through the same `farsight::fuzzing` function the
//! fuzzer runs (`fuzz/README.md`), so a finding stays fixed without cargo-fuzz or nightly flags.

use farsight::fuzzing;
use std::path::{Path, PathBuf};

/// Every file of the target's corpus and regression folders, by name. The corpus must exist and
/// hold seeds: an empty or missing one would make these tests pass without testing anything.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for (kind, required) in [("corpus", true), ("regressions", false)] {
        let dir = root.join(kind).join(target);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot read {}: {e} (remake it: fuzz/README.md)", dir.display()),
        };
        let before = files.len();
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        assert!(!required || files.len() > before, "{} holds no seeds (fuzz/README.md)", dir.display());
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        // A panic inside names the input that caused it.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails (reproduce: fuzz/README.md)", path.display());
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn fuzz_corpus_image_detect() {
    replay("image_detect", fuzzing::image_detect);
}

#[test]
fn fuzz_corpus_config_toml() {
    replay("config_toml", fuzzing::config_toml);
}

#[test]
fn fuzz_corpus_pairs_file() {
    replay("pairs_file", fuzzing::pairs_file);
}

#[test]
fn fuzz_corpus_gallery_db() {
    replay("gallery_db", fuzzing::gallery_db);
}

#[test]
fn fuzz_corpus_event_json() {
    replay("event_json", fuzzing::event_json);
}

/// The seeds reach past the parsers' first refusal: a corpus of inputs that all fail early would
/// replay green while fuzzing nothing of interest.
#[test]
fn fuzz_corpus_seeds_reach_the_accepting_paths() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).unwrap();
    let limits = farsight::source::images::ImageLimits { max_pixels: fuzzing::FUZZ_MAX_PIXELS };
    let image = farsight::source::images::decode(&read("image_detect/face-96x96.jpg"), Path::new("seed"), &limits);
    assert_eq!(image.unwrap().dimensions(), (96, 96));
    let config = farsight::Config::from_bytes(&read("config_toml/example-uncommented.toml"), Path::new("seed"));
    assert_eq!(config.unwrap().cameras.len(), 3);
    let pairs_file = corpus.join("pairs_file/lfw-2-folds.txt");
    assert_eq!(farsight::eval::read_pairs(&pairs_file).unwrap().len(), 12);
    let gallery_copy = tempfile::tempdir().unwrap();
    let path = gallery_copy.path().join("g.db");
    std::fs::copy(corpus.join("gallery_db/gallery-real.sqlite3"), &path).unwrap();
    let gallery = farsight::Gallery::open(&path, farsight::OpenMode::MustExist, None).unwrap();
    assert_eq!(gallery.list().unwrap().len(), 2);
    assert_eq!(gallery.snapshot().unwrap().templates(), 4);
    let event: farsight::event::TrackEvent = serde_json::from_slice(&read("event_json/match-final.json")).unwrap();
    assert_eq!(event.identity, "Ada Lovelace");
}
