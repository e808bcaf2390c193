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

    // `farsight status` reads the running daemon's counters.
    let status = farsight(&["--config", cfg, "status", "--file", &format!("{g}.status.json")]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("camera-frames") && text.contains("recognize"), "{text}");

    // SIGTERM: the camera stops, the pipeline drains, the open visit's final event comes out,
    // and the process exits 0.
    let before = daemon.seen();
    let (code, drained) = daemon.terminate();
    assert!(code.success(), "exit {code:?}");
    let last = drained.last().or(before.last()).unwrap();
    assert_eq!(last["phase"], "final", "the last event is a visit's final one: {last}");
    let announced: Vec<&serde_json::Value> =
        before.iter().chain(&drained).filter(|e| e["phase"] == "decision").collect();
    for d in announced {
        let closed = before.iter().chain(&drained).any(|e| e["track"] == d["track"] && e["phase"] == "final");
        assert!(closed, "track {} was announced but never closed: {drained:#?}", d["track"]);
    }
}

/// A folder camera (looping) and a webhook receiver that accepts connections but never answers:
/// at shutdown the sinks would wait up to 10 s to drain.
fn stuck_webhook_daemon(dir: &std::path::Path) -> (Daemon, std::net::TcpListener) {
    let frames = dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.join("farsight.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[track]\nlost_after_s = 0.3\nunknown_after_s = 0.0\nannounce_frames = 1\n\
             [sinks.webhook]\nurl = \"http://{}/hook\"\ntimeout_ms = 60000\n",
            hole.local_addr().unwrap()
        ),
    )
    .unwrap();
    let g = dir.join("g.db");
    let args = ["--config", config.to_str().unwrap(), "run", "--live", "--gallery", g.to_str().unwrap(), "--source"];
    let mut args: Vec<&str> = args.to_vec();
    args.push(frames.to_str().unwrap());
    (Daemon::start(dir, &args), hole)
}

#[test]
fn sigint_drains_like_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let g = dir.path().join("g.db");
    let args = ["run", "--live", "--gallery", g.to_str().unwrap(), "--source", frames.to_str().unwrap()];
    let daemon = Daemon::start(dir.path(), &args);
    daemon.wait_for(Duration::from_secs(90), "a decision", |e| e["phase"] == "decision");
    daemon.signal("INT");
    let (code, drained) = daemon.wait_exit(Duration::from_secs(30));
    assert!(code.success(), "SIGINT is a clean stop: exit {code:?}");
    assert!(drained.iter().any(|e| e["phase"] == "final"), "the open visit was closed: {drained:#?}");
}

#[test]
fn a_second_sigint_forces_exit_during_a_stuck_drain() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, hole) = stuck_webhook_daemon(dir.path());
    // The webhook sink is inside a delivery that will not be answered for a minute.
    let (_conn, _) = hole.accept().unwrap();
    daemon.signal("INT");
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal("INT");
    let t = std::time::Instant::now();
    let (code, _) = daemon.wait_exit(Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(code.code(), Some(130), "forced exit is 128 + SIGINT: {code:?}");
}
