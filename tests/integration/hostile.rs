//! Regression tests for the defects found by trying to break farsight as an unlucky or hostile
//! user would (issue 15), each named after its bug, through the real binary.

use crate::common::{enroll_tony_blair, farsight, lfw_image, png_declaring, stderr};
use farsight::{Gallery, OpenMode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes a decompression bomb's shape (`common::png_declaring`) to `path`.
fn png_bomb(path: &Path, w: u32, h: u32) {
    std::fs::write(path, png_declaring(w, h)).unwrap();
}

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("farsight.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `farsight --config C validate`: (success, stderr).
fn validate(cfg: &Path) -> (bool, String) {
    let out = farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    (out.status.success(), stderr(&out))
}

#[test]
fn a_decompression_bomb_is_refused_by_enroll_identify_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    png_bomb(&bomb, 16_000, 16_000);
    let g = dir.path().join("g.db");
    enroll_tony_blair(&g);
    let (b, g) = (bomb.to_str().unwrap(), g.to_str().unwrap());
    for args in [vec!["enroll", "--gallery", g, "--name", "Bomb", b], vec!["identify", "--gallery", g, b]] {
        let t = Instant::now();
        let out = farsight(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("16000x16000") && err.contains("images.max_pixels"), "{args:?}: {err}");
        assert!(t.elapsed() < Duration::from_secs(60), "{args:?} took {:?}", t.elapsed());
    }
    // A camera folder holding only bombs reads nothing and says so (exit 1), without decoding.
    let folder = dir.path().join("inbox");
    std::fs::create_dir(&folder).unwrap();
    png_bomb(&folder.join("a.png"), 16_000, 16_000);
    png_bomb(&folder.join("b.png"), 16_000, 16_000);
    let out = farsight(&["run", "--gallery", g, "--source", folder.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("16000x16000") && err.contains("no frame could be read"), "{err}");
    // The limit is a setting: raised, the same file gets to the decoder (which refuses its body).
    let cfg = config(dir.path(), "version = 1\n[images]\nmax_pixels = 1073741824\n");
    let out = farsight(&["--config", cfg.to_str().unwrap(), "identify", "--gallery", g, b]);
    assert!(!stderr(&out).contains("images.max_pixels"), "{}", stderr(&out));
}

#[test]
fn a_truncated_jpeg_is_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(lfw_image("Tony_Blair", 2)).unwrap();
    let half = dir.path().join("half.jpg");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let g = dir.path().join("g.db");
    let out = farsight(&["enroll", "--gallery", g.to_str().unwrap(), "--name", "Half", half.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("half.jpg is truncated") && err.contains("nothing enrolled"), "{err}");
    assert!(!g.exists());
}

#[test]
fn a_rejected_name_writes_no_gallery_and_is_refused_before_the_models_load() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let img = lfw_image("Tony_Blair", 1);
    for name in ["", "Unknown", "unknown", "Ada\u{200B}", "\u{202E}adA", " Ada"] {
        let t = Instant::now();
        let out = farsight(&["enroll", "--gallery", g.to_str().unwrap(), "--name", name, img.to_str().unwrap()]);
        assert!(!out.status.success(), "{name:?} was accepted");
        assert!(stderr(&out).contains("is refused"), "{name:?}: {}", stderr(&out));
        assert!(!g.exists(), "{name:?}: a refused enroll left a gallery file");
        // Refused from the arguments alone: no model is loaded (that takes seconds).
        assert!(t.elapsed() < Duration::from_secs(5), "{name:?} took {:?}", t.elapsed());
    }
}

#[test]
fn a_ten_thousand_character_name_is_not_echoed_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let name = "N".repeat(10_000);
    let img = lfw_image("Tony_Blair", 1);
    let out = farsight(&["enroll", "--gallery", g.to_str().unwrap(), "--name", &name, img.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.len() < 400 && err.contains("10000 characters"),
        "{} bytes: {err:.300}",
        err.len()
    );
}

#[test]
fn enroll_refuses_a_missing_gallery_folder_unless_asked_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("typo").join("g.db");
    let img = lfw_image("Tony_Blair", 1);
    let (g_s, img_s) = (g.to_str().unwrap(), img.to_str().unwrap());
    let out = farsight(&["enroll", "--gallery", g_s, "--name", "Tony Blair", img_s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist") && stderr(&out).contains("--create-dir"), "{}", stderr(&out));
    assert!(!dir.path().join("typo").exists(), "nothing was created");
    let out = farsight(&["-q", "enroll", "--largest", "--create-dir", "--gallery", g_s, "--name", "Tony Blair", img_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(g.exists());
    assert_eq!(stderr(&out), "", "-q silences enroll's progress lines");
}

#[test]
fn two_first_enrolls_race_to_create_a_new_gallery_and_both_succeed() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g.db");
        let children: Vec<_> = [("Tony Blair", "Tony_Blair"), ("George W Bush", "George_W_Bush")]
            .into_iter()
            .map(|(name, who)| {
                std::process::Command::new(env!("CARGO_BIN_EXE_farsight"))
                    .args(["-q", "enroll", "--largest", "--gallery", g.to_str().unwrap(), "--name", name])
                    .arg(lfw_image(who, 1))
                    .env("RUST_LOG", "warn")
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        let list = Gallery::open(&g, OpenMode::MustExist, None).unwrap().list().unwrap();
        assert_eq!(list.len(), 2, "round {round}");
    }
}

#[test]
fn validate_refuses_configs_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 1), frames.join("a.jpg")).unwrap();
    let cam = format!("[[camera]]\nname = \"door\"\nurl = {:?}\n", frames.to_str().unwrap());
    let ok = format!("version = 1\n{cam}");
    let (good, err) = validate(&config(dir.path(), &ok));
    assert!(good, "the base config is fine: {err}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cases = [
        ("[sinks.webhook]\nurl = \"http://\"\n", "names no host"),
        ("[sinks.webhook]\nurl = \"http://127.0.0.1:99999/hook\"\n", "1 to 65535"),
        ("[sinks.mqtt]\nport = 0\n", "sinks.mqtt.port = 0"),
        ("[sinks.mqtt]\ntls = true\nca_file = \"/nonexistent/ca.pem\"\n", "ca_file"),
        ("[[camera]]\nname = \"cam\"\nurl = \"rtsp://\"\n", "names no host"),
        ("[[camera]]\nname = \"cam\"\nurl = \"/nonexistent/clip.mp4\"\n", "does not exist"),
        ("[crops]\nenabled = true\ndir = \"CROPS\"\n", "not a folder"),
    ];
    for (extra, expect) in cases {
        let text = format!("{ok}{}", extra.replace("CROPS", file.to_str().unwrap()));
        let (good, err) = validate(&config(dir.path(), &text));
        assert!(!good && err.contains(expect), "validate accepted or misreported:\n{text}\n---\n{err}");
    }
    // Gallery and status file in a missing folder.
    let missing = dir.path().join("missing").join("x");
    for text in [
        format!("version = 1\ngallery = {missing:?}\n{cam}"),
        format!("version = 1\n{cam}[pipeline]\nstatus_file = {missing:?}\n"),
    ] {
        let (good, err) = validate(&config(dir.path(), &text));
        assert!(!good && err.contains("does not exist"), "{text}\n---\n{err}");
    }
}

#[test]
fn a_config_with_no_cameras_refuses_to_start_instead_of_running_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "version = 1\n");
    for cmd in ["validate", "run"] {
        let out = farsight(&["--config", cfg.to_str().unwrap(), cmd]);
        assert!(!out.status.success(), "{cmd} with no cameras must fail");
        assert!(stderr(&out).contains("no cameras"), "{cmd}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{cmd}: no event may come out");
    }
}

#[test]
fn a_camera_url_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(dir.path(), "version = 1\n[[camera]]\nname = \"door\"\nurl = \"http://admin:hunter2@10.0.0.5/s\"\n");
    let (good, err) = validate(&cfg);
    assert!(!good && err.contains("admin:***@") && !err.contains("hunter2"), "{err}");
    let out = farsight(&["run", "--source", "rtmp://admin:hunter2@10.0.0.5/live"]);
    assert!(!out.status.success() && !stderr(&out).contains("hunter2"), "{}", stderr(&out));
}

#[test]
fn range_errors_name_their_line_and_binary_configs_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(dir.path(), "version = 1\n\n[detector]\nkind = \"centerface\"\nmax_side = 20\n[match]\ntop_k = 0\n");
    let (good, err) = validate(&cfg);
    assert!(!good && err.contains("line 5: detector.max_side") && err.contains("line 7: match.top_k"), "{err}");
    let bin = dir.path().join("bin.toml");
    std::fs::write(&bin, b"version = 1\n[detector]\nkind = \"c\xffnterface\"\n").unwrap();
    let out = farsight(&["--config", bin.to_str().unwrap(), "validate"]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("not UTF-8") && err.contains("line 3, column 10"), "{err}");
    std::fs::write(&bin, b"version = 1\n\0\0\0ELF").unwrap();
    let out = farsight(&["--config", bin.to_str().unwrap(), "validate"]);
    assert!(stderr(&out).contains("NUL byte") && stderr(&out).contains("line 2, column 1"), "{}", stderr(&out));
}

#[test]
fn run_on_an_unreadable_image_fails_instead_of_exiting_0_with_no_frames() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.jpg");
    std::fs::write(&zero, b"").unwrap();
    let g = dir.path().join("g.db");
    let out = farsight(&["run", "--gallery", g.to_str().unwrap(), "--source", zero.to_str().unwrap()]);
    assert!(!out.status.success(), "exit 0 with 0 frames");
    assert!(
        stderr(&out).contains("zero.jpg is empty") && stderr(&out).contains("no frame could be read"),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_work_for_run_and_are_stored_losslessly_by_enroll() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&odd).unwrap();
    let img = odd.join("a.jpg");
    std::fs::copy(lfw_image("Tony_Blair", 3), &img).unwrap();
    let g = dir.path().join("g.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["enroll", "--largest", "--gallery", g.to_str().unwrap(), "--name", "Tony Blair"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = rusqlite::Connection::open(&g).unwrap();
    let source: String = conn.query_row("SELECT source FROM templates", [], |r| r.get(0)).unwrap();
    assert!(source.contains("caf\\xE9/a.jpg") && !source.contains('\u{FFFD}'), "{source}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["run", "--gallery", g.to_str().unwrap(), "--source"])
        .arg(&odd)
        .env("FARSIGHT_HTTP_BIND", crate::common::HTTP_ANY_PORT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Tony Blair"));
}

#[test]
fn error_causes_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff\xe0 not a jpeg body at all, just bytes").unwrap();
    let cfg = config(dir.path(), "version = 1\n[detector]\nkind = \"yolo\"\n");
    let g = dir.path().join("g.db");
    enroll_tony_blair(&g);
    for args in [
        vec!["identify", "--gallery", g.to_str().unwrap(), junk.to_str().unwrap()],
        vec!["--config", cfg.to_str().unwrap(), "validate"],
        vec!["enroll", "--gallery", g.to_str().unwrap(), "--name", "X", junk.to_str().unwrap()],
    ] {
        let err = stderr(&farsight(&args));
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            let parts: Vec<&str> = line.split(": ").map(str::trim).filter(|p| p.len() > 8).collect();
            for (i, p) in parts.iter().enumerate() {
                assert!(!parts[i + 1..].contains(p), "{args:?}: {p:?} printed twice in {line:?}");
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn skipped_fifos_in_a_camera_folder_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(frames.join("b.jpg")).status().unwrap().success());
    std::fs::create_dir(frames.join("c.jpg")).unwrap();
    let g = dir.path().join("g.db");
    let summary = dir.path().join("s.json");
    let out = farsight(&[
        "run",
        "--gallery",
        g.to_str().unwrap(),
        "--source",
        frames.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("b.jpg is not a regular file (a FIFO)"), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let cam = s["stages"].as_array().unwrap().iter().find(|s| s["name"] == "camera-frames").unwrap().clone();
    assert_eq!((cam["in"].as_u64(), cam["errors"].as_u64()), (Some(1), Some(2)), "{cam}");
}
