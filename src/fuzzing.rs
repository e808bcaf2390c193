//! Fuzz targets for the parsers that read untrusted bytes: image files (decoded, then run through
//! the real detector), config files, LFW pairs files, gallery databases and track-event JSON.
//! Each `pub fn` takes arbitrary bytes and must never panic, hang or abort on any of them: a
//! panic here is a bug (a finding). Inside, a target may assert the invariants its parser
//! promises (round trips). `fuzz/` runs them under cargo-fuzz (libFuzzer, see `fuzz/README.md`);
//! `tests/integration/fuzz_corpus.rs` replays the committed corpus and the fixed crashers
//! through the same functions, so CI keeps every finding fixed.

use crate::config::{Config, DEFAULT_MODELS_DIR};
use crate::detect::{Detector, DetectorConfig, DetectorKind, Face};
use crate::event::TrackEvent;
use crate::gallery::{Gallery, OpenMode};
use crate::source::images::ImageLimits;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The most pixels a fuzzed image may declare: keeps one execution to tens of milliseconds.
pub const FUZZ_MAX_PIXELS: u64 = 256 * 256;

/// The detector every `image_detect` run shares: RetinaFace-MobileNet0.25 with the default
/// thresholds. It is about 3x faster than CenterFace (README, "Performance facts") and decodes
/// its outputs through different code (prior boxes, no clamping), which is the part fuzzing
/// can reach; CenterFace would spend the same time on the same image-decoding paths.
fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        let config = DetectorConfig { kind: DetectorKind::Retinaface, ..DetectorConfig::default() };
        match Detector::load(Path::new(DEFAULT_MODELS_DIR), config) {
            Ok(d) => d,
            Err(e) => panic!("cannot load the detector from {DEFAULT_MODELS_DIR}: {}", crate::error_chain(&e)),
        }
    })
}

/// Loads the detector `image_detect` uses (seconds), so the fuzzer's first input is not timed
/// with the model load (the fuzz target's `init`).
pub fn image_detect_init() {
    detector();
}

/// Decodes `data` as an image file (JPEG, PNG, BMP) within a 256x256-pixel limit; when it
/// decodes, runs the real detector on it. Invariants: a decoded image has the size its header
/// declared within the limit, and every detected face has finite coordinates and score.
pub fn image_detect(data: &[u8]) {
    let limits = ImageLimits { max_pixels: FUZZ_MAX_PIXELS };
    let Ok(image) = crate::source::images::decode(data, Path::new("fuzz-input"), &limits) else { return };
    let (w, h) = image.dimensions();
    assert!(u64::from(w) * u64::from(h) <= FUZZ_MAX_PIXELS, "decoded {w}x{h} past the pixel limit");
    match detector().detect(&image) {
        Ok(faces) => {
            for face in &faces {
                assert!(face_is_finite(face), "non-finite face in a {w}x{h} image: {face:?}");
            }
        }
        // An empty frame is the one refusal a decoded image may get; anything else is a model
        // problem that a valid image must never cause.
        Err(crate::detect::DetectError::EmptyFrame(..)) => {}
        Err(e) => panic!("detector failed on a decoded {w}x{h} image: {}", crate::error_chain(&e)),
    }
}

fn face_is_finite(face: &Face) -> bool {
    let r = &face.rect;
    [r.x, r.y, r.w, r.h, face.score]
        .iter()
        .chain(face.landmarks.iter().flat_map(|p| [&p.x, &p.y]))
        .all(|v| v.is_finite())
        && r.w >= 0.0
        && r.h >= 0.0
}

/// Parses `data` as a config file ([`Config::from_bytes`]). Invariants: an accepted config has no
/// problems, and it round-trips: `toml::to_string` writes it, and parsing that text gives an equal
/// config. (Floats cannot spoil the equality: every float key is range-checked, so a NaN never
/// passes `validate`, and toml writes f32 values exactly.)
pub fn config_toml(data: &[u8]) {
    let path = Path::new("fuzz.toml");
    let Ok(config) = Config::from_bytes(data, path) else { return };
    let problems = config.validate();
    assert!(problems.is_empty(), "an accepted config has problems: {problems:?}");
    let text = match toml::to_string(&config) {
        Ok(text) => text,
        Err(e) => panic!("an accepted config cannot be written back: {e}\n{config:?}"),
    };
    match Config::parse(&text, path) {
        Ok(again) => assert_eq!(again, config, "the config changed in a round trip through:\n{text}"),
        Err(e) => panic!("a written-back config is refused: {}\n{text}", crate::error_chain(&e)),
    }
}

/// A scratch file of this thread's own in a tmpfs (`/dev/shm`) when there is one, else in the
/// temporary folder, for targets whose parser reads a file. Overwritten by every run; one per
/// thread, so the corpus test's threads never share one.
fn scratch_file(kind: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
    let id = ID.with(|id| *id);
    dir.join(format!("farsight-fuzz-{}-{id}.{kind}", std::process::id()))
}

fn write_scratch(path: &Path, data: &[u8]) {
    if let Err(e) = std::fs::write(path, data) {
        panic!("cannot write the fuzz scratch file {}: {e}", path.display());
    }
}

/// Parses `data` as an LFW pairs file through [`crate::eval::read_pairs`] (the file is written to
/// a scratch file first, so the read's own UTF-8 check runs too), and the same text as a fold
/// selection ([`crate::eval::parse_folds`]). Invariants: bytes that are not UTF-8 are refused;
/// every pair belongs to a fold of the header, genuine pairs name one person; a fold selection
/// is sorted, distinct and 1-based.
pub fn pairs_file(data: &[u8]) {
    let path = scratch_file("pairs.txt");
    write_scratch(&path, data);
    let pairs = crate::eval::read_pairs(&path);
    let _ = std::fs::remove_file(&path);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(pairs.is_err(), "a pairs file that is not UTF-8 was accepted");
        return;
    };
    if let Ok(pairs) = pairs {
        for p in &pairs {
            assert!(p.fold >= 1, "fold numbers are 1-based: {p:?}");
            if p.genuine {
                assert_eq!(p.first.name, p.second.name, "a genuine pair names two people");
            }
        }
        assert!(pairs.windows(2).all(|w| w[0].fold <= w[1].fold), "pairs out of fold order");
    }
    if let Ok(folds) = crate::eval::parse_folds(text) {
        assert!(!folds.is_empty() && folds[0] >= 1, "fold selection {text:?} gave {folds:?}");
        assert!(folds.windows(2).all(|w| w[0] < w[1]), "fold selection {text:?} not sorted and distinct");
    }
}

/// Writes `data` to a scratch file and opens it as an existing gallery, then lists it, loads its
/// snapshot (and searches it) and reads its generation. Errors are fine (a damaged file must be
/// refused with a message); a panic, a hang or an abort is a finding. The scratch file and its
/// `-wal`/`-shm`/`-journal` companions are removed before and after each run, so runs never see
/// each other's state.
pub fn gallery_db(data: &[u8]) {
    let path = scratch_file("gallery.db");
    remove_database(&path);
    write_scratch(&path, data);
    if let Ok(gallery) = Gallery::open(&path, OpenMode::MustExist, None) {
        let _ = gallery.list();
        if let Ok(snapshot) = gallery.snapshot() {
            let probe = vec![1.0 / (crate::embed::EMBEDDING_DIM as f32).sqrt(); crate::embed::EMBEDDING_DIM];
            let found = snapshot.search(&probe, 3);
            assert!(found.len() <= 3usize.min(snapshot.identities()), "search returned {} candidates", found.len());
            assert!(found.iter().all(|c| c.score.is_finite()), "non-finite candidate score: {found:?}");
        }
        let _ = gallery.generation();
    }
    remove_database(&path);
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Parses `data` as a [`TrackEvent`] (what the coming HTTP API reads back from the SQLite
/// sink's `events.json` column). Invariant: an event that parses writes back to JSON, and when
/// every float in it is finite that JSON parses to an equal event.
///
/// Two float limits are checked here, not hidden:
/// - JSON has no NaN or infinity (serde_json writes them as `null`), and a number beyond f32's
///   range (`1e39`) reads as an infinite f32, so such an event writes as JSON that no longer
///   reads as an event (or reads with `score` null): the round trip must then fail or change,
///   never panic.
/// - serde_json without its `float_roundtrip` feature read some long f64 literals 1 ULP off
///   (`7.84866200421318e+183` for `first_seen_s` read, wrote and read back 1 ULP apart); Cargo.toml
///   enables it, so the round trip is compared exactly (regression: `regressions/event_json`).
pub fn event_json(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<TrackEvent>(data) else { return };
    let text = match serde_json::to_string(&event) {
        Ok(text) => text,
        Err(e) => panic!("a parsed event cannot be written back: {e}\n{event:?}"),
    };
    let again = serde_json::from_str::<TrackEvent>(&text);
    if !event_is_finite(&event) {
        assert!(!again.is_ok_and(|a| a == event), "a non-finite event survived JSON: {text}");
        return;
    }
    match again {
        Ok(again) => {
            assert_eq!(again, event, "the event changed in a round trip through:\n{text}");
        }
        Err(e) => panic!("a written-back event is refused: {e}\n{text}"),
    }
}

/// Whether every float of the event is finite (what JSON can hold).
pub fn event_is_finite(e: &TrackEvent) -> bool {
    let b = &e.best_shot;
    let r = &b.rect;
    let f32s = [r.x, r.y, r.w, r.h, b.face_px, b.aligned_px, b.detector_score, b.quality];
    f32s.iter().all(|v| v.is_finite())
        && e.score.is_none_or(f32::is_finite)
        && e.candidates.iter().all(|c| c.score.is_finite())
        && e.first_seen_s.is_finite()
        && e.last_seen_s.is_finite()
}
