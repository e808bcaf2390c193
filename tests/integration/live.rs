//! The daemon as a user runs it: `farsight run` on a camera that keeps delivering frames (an image
//! folder read as a live camera, which loops), a gallery changed by another process while it
//! runs, `farsight status`, and SIGTERM.

use crate::common::{enroll_tony_blair, farsight, lfw_image, stderr, Daemon};
use std::time::Duration;

#[test]
fn a_running_daemon_picks_up_an_enroll_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("g.db");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[track]\nlost_after_s = 0.3\n[pipeline]\nstatus_interval_s = 0.5\n").unwrap();
    let (cfg, g, src) = (config.to_str().unwrap(), gallery.to_str().unwrap(), frames.to_str().unwrap());
    let daemon = Daemon::start(dir.path(), &["--config", cfg, "run", "--live", "--gallery", g, "--source", src]);

    // No gallery yet: he is a stranger, once per visit (the folder loops, one visit per pass).
    daemon.wait_for(Duration::from_secs(90), "unknown event", |e| e["event"] == "unknown");

    // Another process enrolls him; the running daemon picks it up without a restart.
    enroll_tony_blair(&gallery);
    let matched = daemon.wait_for(Duration::from_secs(90), "match after the enroll", |e| e["event"] == "match");
    assert_eq!(matched["identity"], "Tony Blair");
    assert_eq!(matched["update"], false);

    // `farsight status` reads the running daemon's counters.
    let status = farsight(&["--config", cfg, "status", "--file", &format!("{g}.status.json")]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("camera-frames") && text.contains("recognize"), "{text}");

    // SIGTERM: the camera stops, the pipeline drains, the process exits 0.
    let log = dir.path().to_owned();
    let (code, _) = daemon.terminate();
    assert!(code.success(), "exit {code:?} (logs in {})", log.display());
}
