//! The daemon as a user runs it: `farsight run` on a camera that keeps delivering frames (an image
//! folder read as a live camera, which loops), a gallery changed by another process while it
//! runs, and SIGTERM.

use crate::common::{farsight, lfw_image, stderr};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits up to `within` for an event line satisfying `want`; returns it.
fn wait_for(
    rx: &mpsc::Receiver<serde_json::Value>,
    within: Duration,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return Some(e),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn a_running_daemon_picks_up_an_enroll_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("g.db");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[track]\nlost_after_s = 0.3\n[pipeline]\nstatus_interval_s = 0.5\n").unwrap();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["--config", config.to_str().unwrap(), "run", "--live", "--gallery"])
        .arg(&gallery)
        .arg("--source")
        .arg(&frames)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::sync_channel(1000);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(serde_json::from_str::<serde_json::Value>(&line).expect("stdout is JSON lines"));
        }
    });
    let log_text = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

    // No gallery yet: he is a stranger, once per visit (the folder loops, one visit per pass).
    let first = wait_for(&rx, Duration::from_secs(90), |e| e["event"] == "unknown");
    assert!(first.is_some(), "no unknown event; log:\n{}", log_text());

    // Another process enrolls him; the running daemon picks it up without a restart.
    let a1 = lfw_image("Tony_Blair", 1);
    let a2 = lfw_image("Tony_Blair", 2);
    let g = gallery.to_str().unwrap();
    let enroll = farsight(&[
        "enroll",
        "--gallery",
        g,
        "--name",
        "Tony Blair",
        "--largest",
        a1.to_str().unwrap(),
        a2.to_str().unwrap(),
    ]);
    assert!(enroll.status.success(), "{}", stderr(&enroll));
    let matched = wait_for(&rx, Duration::from_secs(90), |e| e["event"] == "match");
    let matched = matched.unwrap_or_else(|| panic!("no match after the enroll; log:\n{}", log_text()));
    assert_eq!(matched["identity"], "Tony Blair");
    assert_eq!(matched["update"], false);

    // `farsight status` reads the running daemon's counters.
    let status = Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["--config", config.to_str().unwrap(), "status", "--file"])
        .arg(dir.path().join("g.db.status.json"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("camera-frames") && text.contains("recognize"), "{text}");

    // SIGTERM: the camera stops, the pipeline drains, the process exits 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "farsight did not stop within 30 s of SIGTERM; log:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    assert!(code.success(), "exit {code:?}; log:\n{}", log_text());
    assert!(log_text().contains("finished in"), "{}", log_text());
}
