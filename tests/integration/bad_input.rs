//! Bad input at the edges: broken image files and foreign galleries give a clear error naming
//! the problem, and nothing is written.

use crate::common::{farsight, lfw_image, stderr};
use farsight::embed::EmbedderId;
use farsight::gallery::NewTemplate;
use farsight::{Gallery, OpenMode};
use std::path::{Path, PathBuf};

/// Enrolls `image` (plus a good photo, so one bad image must spoil the whole enroll) and checks
/// the command fails with `expect` in its message and the gallery file was never created.
fn enroll_is_refused(image: &Path, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let good = lfw_image("Tony_Blair", 1);
    let out = farsight(&[
        "enroll",
        "--gallery",
        g.to_str().unwrap(),
        "--name",
        "Someone",
        "--largest",
        good.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "enrolling {} should fail", image.display());
    assert!(err.contains(expect), "message for {} lacks {expect:?}: {err}", image.display());
    assert!(err.contains("nothing enrolled"), "{err}");
    assert!(!g.exists(), "a refused enroll must not create the gallery");
}

#[test]
fn a_corrupt_jpeg_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(lfw_image("Tony_Blair", 2)).unwrap();
    // Keep the JPEG signature, wreck the headers and the entropy-coded data after it.
    for b in bytes.iter_mut().skip(4) {
        *b = 0x5a;
    }
    let path = dir.path().join("corrupt.jpg");
    std::fs::write(&path, &bytes).unwrap();
    enroll_is_refused(&path, "corrupt.jpg is not a readable image");
}

#[test]
fn a_truncated_png_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::open(lfw_image("Tony_Blair", 2)).unwrap();
    let full = dir.path().join("full.png");
    img.save(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let path = dir.path().join("truncated.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    enroll_is_refused(&path, "truncated.png is not a readable image");
}

#[test]
fn a_zero_byte_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jpg");
    std::fs::write(&path, b"").unwrap();
    enroll_is_refused(&path, "empty.jpg is empty");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    enroll_is_refused(dir.path(), "is a folder, not an image");
}

#[test]
fn a_photo_without_a_face_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128])).save(&path).unwrap();
    enroll_is_refused(&path, "grey.png: no face found");
}

#[test]
fn a_refused_enroll_leaves_an_existing_gallery_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let g = g.to_str().unwrap();
    let good = lfw_image("Tony_Blair", 1);
    assert!(farsight(&["enroll", "--gallery", g, "--name", "A", "--largest", good.to_str().unwrap()]).status.success());
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let out = farsight(&[
        "enroll",
        "--gallery",
        g,
        "--name",
        "A",
        "--largest",
        good.to_str().unwrap(),
        empty.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let list = Gallery::open(Path::new(g), OpenMode::MustExist, None).unwrap().list().unwrap();
    assert_eq!(list[0].templates, 1, "the failed enroll must not add the good image's template");
}

#[test]
fn a_gallery_made_by_another_embedder_asks_for_re_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let other = EmbedderId { name: "arcface-r100".into(), sha256: "0".repeat(64) };
    let mut gallery = Gallery::open(&g, OpenMode::CreateIfMissing, Some(&other)).unwrap();
    let t = NewTemplate { vector: vec![1.0 / (128f32).sqrt(); 128], source: "x".into(), face_px: 100.0 };
    gallery.enroll("Old", &other, &[t]).unwrap();
    drop(gallery);
    let img = lfw_image("Tony_Blair", 1);
    for args in [
        vec!["identify", "--gallery", g.to_str().unwrap(), img.to_str().unwrap()],
        vec!["enroll", "--gallery", g.to_str().unwrap(), "--name", "New", img.to_str().unwrap()],
    ] {
        let out = farsight(&args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("arcface-r100") && err.contains("re-enroll"), "{err}");
    }
}

#[test]
fn a_corrupt_gallery_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    std::fs::write(&g, vec![7u8; 4096]).unwrap();
    let img = lfw_image("Tony_Blair", 1);
    let out = farsight(&["identify", "--gallery", g.to_str().unwrap(), img.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a farsight gallery or is corrupt"), "{}", stderr(&out));
}

#[test]
fn a_bad_config_fails_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(&cfg, "version = 1\n[detector]\nkind = \"yolo\"\n").unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
}

#[test]
fn a_wrong_model_file_is_refused_at_start() {
    // The detector file standing in for the embedder: it loads as ONNX but breaks the contract.
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in ["centerface.onnx", "retinaface-mnet025.onnx", "yunet.onnx"] {
        std::fs::copy(models.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(models.join("retinaface-mnet025.onnx"), dir.path().join("sface.onnx")).unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(&cfg, format!("version = 1\nmodels_dir = {:?}\n", dir.path())).unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sface.onnx"), "{}", stderr(&out));
    // A missing model names the fetch script.
    std::fs::remove_file(dir.path().join("sface.onnx")).unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(stderr(&out).contains("models/fetch.py"), "{}", stderr(&out));
}

/// A models folder with the committed detectors (photos and regions) and embedder, a config pointing at it with
/// `restore.method = "ftlgan"`, and `ftlgan` as given (`None`: no ftlgan.onnx at all).
fn ftlgan_config(dir: &Path, ftlgan: Option<&[u8]>) -> std::path::PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in ["centerface.onnx", "yunet.onnx", "sface.onnx"] {
        std::fs::copy(models.join(f), dir.join(f)).unwrap();
    }
    if let Some(bytes) = ftlgan {
        std::fs::write(dir.join("ftlgan.onnx"), bytes).unwrap();
    }
    let cfg = dir.join("f.toml");
    std::fs::write(&cfg, format!("version = 1\nmodels_dir = {:?}\n[restore]\nmethod = \"ftlgan\"\n", dir)).unwrap();
    cfg
}

#[test]
fn a_corrupt_ftlgan_model_fails_at_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // Pseudo-random bytes (not a protobuf), with a plausible size.
    let bytes: Vec<u8> = (0u32..200_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cfg = ftlgan_config(dir.path(), Some(&bytes));
    for args in [vec!["validate"], vec!["identify", lfw_image("Tony_Blair", 1).to_str().unwrap()]] {
        let mut full = vec!["--config", cfg.to_str().unwrap()];
        full.extend(args.iter().copied());
        let out = farsight(&full);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} with a corrupt ftlgan.onnx must fail");
        assert!(err.contains("ftlgan.onnx is not an ONNX model"), "{args:?}: {err}");
        assert!(err.contains("models/ftlgan/") && err.contains("models/fetch.py"), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_ftlgan_model_names_the_training_steps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ftlgan_config(dir.path(), None);
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("ftlgan.onnx is missing") && err.contains("models/ftlgan/quantise.py"), "{err}");
    // The embedder copied as the restorer: loads as ONNX, breaks the contract.
    std::fs::copy(dir.path().join("sface.onnx"), dir.path().join("ftlgan.onnx")).unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a face restorer"), "{}", stderr(&out));
}

/// A models folder with the committed detector, embedder and restorers, a config with the
/// default small-face path (`lrembed`), and `lrembed` as given (`None`: no lrembed.onnx at all).
fn lrembed_config(dir: &Path, lrembed: Option<&[u8]>) -> std::path::PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in ["centerface.onnx", "yunet.onnx", "sface.onnx", "ftlgan.onnx"] {
        std::fs::copy(models.join(f), dir.join(f)).unwrap();
    }
    if let Some(bytes) = lrembed {
        std::fs::write(dir.join("lrembed.onnx"), bytes).unwrap();
    }
    let cfg = dir.join("f.toml");
    std::fs::write(&cfg, format!("version = 1\nmodels_dir = {:?}\n[embed]\nsmall_face_embedder = \"lrembed\"\n", dir))
        .unwrap();
    cfg
}

/// What every lrembed refusal must say: the file, how to get the good one back, how to do without.
fn says_how_to_fix_lrembed(what: &str, err: &str) {
    assert!(err.contains("lrembed.onnx"), "{what}: {err}");
    assert!(err.contains("models/fetch.py --check"), "{what}: {err}");
    assert!(err.contains("small_face_embedder = \"sface\""), "{what}: {err}");
}

#[test]
fn a_corrupt_or_wrong_shape_lrembed_model_is_refused_at_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0u32..200_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cfg = lrembed_config(dir.path(), Some(&bytes));
    for args in [vec!["validate"], vec!["identify", lfw_image("Tony_Blair", 1).to_str().unwrap()]] {
        let mut full = vec!["--config", cfg.to_str().unwrap()];
        full.extend(args.iter().copied());
        let out = farsight(&full);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} with a corrupt lrembed.onnx must fail");
        assert!(err.contains("lrembed.onnx is not an ONNX model"), "{args:?}: {err}");
        says_how_to_fix_lrembed("corrupt", &err);
    }
    // A restorer standing in for the embedder: loads as ONNX, but returns an image, not 128 floats.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::copy(models.join("ftlgan.onnx"), dir.path().join("lrembed.onnx")).unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a restorer as lrembed.onnx must fail");
    assert!(err.contains("not a 128-d face embedder"), "{err}");
    says_how_to_fix_lrembed("wrong output shape", &err);
    // A model for another input size (YuNet declares 1x3x640x640).
    std::fs::copy(models.join("yunet.onnx"), dir.path().join("lrembed.onnx")).unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a 640x640 model as lrembed.onnx must fail");
    says_how_to_fix_lrembed("wrong input shape", &err);
}

#[test]
fn a_missing_lrembed_model_says_where_it_comes_from_and_how_to_turn_the_path_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lrembed_config(dir.path(), None);
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("lrembed.onnx is missing"), "{err}");
    says_how_to_fix_lrembed("missing", &err);
    // Turning the path off needs no lrembed.onnx.
    std::fs::write(
        &cfg,
        format!("version = 1\nmodels_dir = {:?}\n[embed]\nsmall_face_embedder = \"sface\"\n", dir.path()),
    )
    .unwrap();
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    // The models load; what is left is this test config's lack of cameras.
    assert!(!err.contains("lrembed") && err.contains("no cameras"), "{err}");
}

#[test]
fn bench_skips_a_missing_ftlgan_model_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in ["centerface.onnx", "retinaface-mnet025.onnx", "yunet.onnx", "sface.onnx", "ftlgan-fp32.onnx"] {
        std::fs::copy(models.join(f), dir.path().join(f)).unwrap();
    }
    let cfg = dir.path().join("f.toml");
    // The default restorer is ftlgan itself: without its file a run fails at start (tested
    // above), so this box is configured for bicubic and only the bench row is skipped.
    std::fs::write(
        &cfg,
        format!(
            "version = 1\nmodels_dir = {:?}\n[restore]\nmethod = \"bicubic\"\n[embed]\nsmall_face_embedder = \"sface\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let img = lfw_image("Tony_Blair", 1);
    let out =
        farsight(&["--config", cfg.to_str().unwrap(), "bench", "--image", img.to_str().unwrap(), "--iterations", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    let line =
        |stage: &str| text.lines().find(|l| l.starts_with(stage)).unwrap_or_else(|| panic!("no {stage}: {text}"));
    assert!(line("restore ftlgan-fp32 14->112").split_whitespace().nth(3).unwrap().parse::<f64>().is_ok(), "{text}");
    let skipped = line("restore ftlgan 14->112");
    assert!(skipped.contains("skipped") && skipped.contains("ftlgan.onnx is missing"), "{text}");
}

/// A models folder of links to the repository's `.onnx` files (one can then be swapped for
/// another file), and the repository's models folder.
fn linked_models() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            std::os::unix::fs::symlink(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    (dir, models)
}

#[test]
fn a_photo_detector_replaced_after_start_is_refused_not_loaded() {
    // `run` frees the photo detector after its start-up check and loads it again for the first
    // HTTP photo: a file swapped in between must not be loaded unchecked.
    let (dir, models) = linked_models();
    let config = farsight::config::Config { models_dir: dir.path().to_owned(), ..Default::default() };
    let mut rec = farsight::recognize::Recognizer::load(&config).unwrap();
    rec.release_photo_detector();
    assert!(rec.detector().is_ok(), "the same file loads again");
    rec.release_photo_detector();
    std::fs::remove_file(dir.path().join("centerface.onnx")).unwrap();
    std::fs::copy(models.join("retinaface-mnet025.onnx"), dir.path().join("centerface.onnx")).unwrap();
    let err = rec.detector().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("centerface.onnx changed since farsight started"), "{err}");
    assert!(rec.detector_label().starts_with("Centerface (sha256 "), "{}", rec.detector_label());
}

#[test]
fn a_small_face_embedder_replaced_after_its_start_up_check_is_refused_not_loaded() {
    // Photo commands check lrembed at start, drop it, and load it for the first small face: a
    // file swapped in between must not be loaded unchecked.
    let (dir, models) = linked_models();
    let config = farsight::config::Config { models_dir: dir.path().to_owned(), ..Default::default() };
    let rec = farsight::recognize::Recognizer::load_for_photos(&config).unwrap();
    let large = rec.route(60.0).unwrap();
    assert_eq!(large.kind, farsight::embed::EmbedderKind::Sface);
    std::fs::remove_file(dir.path().join("lrembed.onnx")).unwrap();
    std::fs::copy(models.join("sface.onnx"), dir.path().join("lrembed.onnx")).unwrap();
    let err = rec.route(14.0).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("lrembed.onnx changed since farsight started"), "{err}");
    // The file checked at start loads on demand.
    let rec = farsight::recognize::Recognizer::load_for_photos(&farsight::config::Config {
        models_dir: models.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(rec.route(14.0).unwrap().kind, farsight::embed::EmbedderKind::Lrembed);
}

#[test]
fn a_photo_detector_that_is_also_the_region_detector_is_kept_not_loaded_twice() {
    let mut config = farsight::config::Config {
        models_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        ..Default::default()
    };
    config.scene.detector = config.detector.kind;
    let mut rec = farsight::recognize::Recognizer::load(&config).unwrap();
    rec.release_photo_detector();
    assert!(std::ptr::eq(rec.detector().unwrap(), rec.region_detector()), "one detector serves both");
}
