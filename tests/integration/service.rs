//! The systemd notify protocol, spoken for real without systemd: the test binds the Unix datagram
//! socket `NOTIFY_SOCKET` names and reads what `farsight run` tells it: READY=1 only after the
//! first frame, WATCHDOG=1 keep-alives while the pipeline makes progress (and none once a stage
//! stalls), STOPPING=1 on SIGTERM, RELOADING=1 / READY=1 around a SIGHUP reload.

use crate::common::{enroll_tony_blair, lfw_image, Daemon};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// One datagram farsight sent: when it arrived and its `KEY=value` lines.
struct Note {
    at: Instant,
    lines: Vec<String>,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
    fn status(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// Binds the notify socket in `dir`; its datagrams arrive on the channel.
fn listen(dir: &Path) -> (String, Receiver<Note>) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let lines = text.lines().map(str::to_owned).collect();
            if tx.send(Note { at: Instant::now(), lines }).is_err() {
                return;
            }
        }
    });
    (path.to_str().unwrap().to_owned(), rx)
}

/// Notes until one satisfies `want` (returned last), or a panic after `within`.
fn until(rx: &Receiver<Note>, within: Duration, what: &str, want: impl Fn(&Note) -> bool) -> Vec<Note> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(n) => {
                let done = want(&n);
                seen.push(n);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    let got: Vec<&Vec<String>> = seen.iter().map(|n| &n.lines).collect();
    panic!("no {what} within {within:?}; got {got:?}");
}

fn camera_folder(dir: &Path) -> String {
    let frames = dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    frames.to_str().unwrap().to_owned()
}

#[test]
fn systemd_hears_ready_after_the_first_frame_then_keep_alives_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, notes) = listen(dir.path());
    let frames = camera_folder(dir.path());
    let g = dir.path().join("g.db");
    let started = Instant::now();
    let args = ["run", "--live", "--gallery", g.to_str().unwrap(), "--source", &frames];
    let daemon = Daemon::start_with_env(dir.path(), &args, &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")]);
    let before = until(&notes, Duration::from_secs(120), "READY=1", |n| n.has("READY=1"));
    let ready = before.last().unwrap();
    // READY is decided from the camera's frame counter: its STATUS says every camera delivered.
    assert!(ready.status().is_some_and(|s| s.contains("every camera delivers")), "{:?}", ready.lines);
    assert_eq!(
        before.len(),
        1,
        "nothing (not even a keep-alive) before READY: {:?}",
        before.iter().map(|n| &n.lines).collect::<Vec<_>>()
    );
    eprintln!("start to READY on an image-folder camera: {:.2} s", (ready.at - started).as_secs_f64());
    // Keep-alives at half the watchdog period while the pipeline runs.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_secs(4) {
        if let Ok(n) = notes.recv_timeout(Duration::from_millis(200)) {
            pings += usize::from(n.has("WATCHDOG=1"));
        }
    }
    assert!(pings >= 4, "{pings} WATCHDOG=1 in 4 s with WATCHDOG_USEC = 1 s");
    daemon.signal("TERM");
    until(&notes, Duration::from_secs(30), "STOPPING=1", |n| n.has("STOPPING=1"));
    let (code, _) = daemon.wait_exit(Duration::from_secs(30));
    assert!(code.success(), "{code:?}");
}

#[test]
fn a_stalled_camera_stops_the_watchdog_keep_alives() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, notes) = listen(dir.path());
    let cfg = dir.path().join("farsight.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\ngallery = {:?}\n[service]\nstall_after_s = 2.0\n[[camera]]\nname = \"hung\"\nurl = \"test://stall\"\n",
            dir.path().join("g.db")
        ),
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "run"];
    let daemon = Daemon::start_with_env(dir.path(), &args, &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "500000")]);
    until(&notes, Duration::from_secs(120), "READY=1", |n| n.has("READY=1"));
    // One frame, then the source never returns: its heartbeat goes stale after 2 s.
    let seen = until(&notes, Duration::from_secs(30), "a stalled STATUS", |n| {
        n.status().is_some_and(|s| s.contains("stalled") && s.contains("cam-hung"))
    });
    assert!(seen.iter().any(|n| n.has("WATCHDOG=1")), "keep-alives came while the camera was fresh");
    let quiet_from = Instant::now();
    while quiet_from.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = notes.recv_timeout(Duration::from_millis(200)) {
            assert!(!n.has("WATCHDOG=1"), "a keep-alive after the stall: {:?}", n.lines);
        }
    }
    drop(daemon); // killed: a hung source never returns, which is what systemd's watchdog is for
}

#[test]
fn sighup_applies_a_new_threshold_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, notes) = listen(dir.path());
    let g = dir.path().join("g.db");
    enroll_tony_blair(&g);
    let frames = camera_folder(dir.path());
    let cfg = dir.path().join("farsight.toml");
    let write = |threshold: &str, camera: &str| {
        let text = format!(
            "version = 1\ngallery = {g:?}\n[match]\nthreshold = {threshold}\n[track]\nlost_after_s = 0.3\n\
             [[camera]]\nname = \"{camera}\"\nurl = {frames:?}\nlive = true\n"
        );
        std::fs::write(&cfg, text).unwrap();
    };
    write("0.363", "door");
    let daemon =
        Daemon::start_with_env(dir.path(), &["--config", cfg.to_str().unwrap(), "run"], &[("NOTIFY_SOCKET", &socket)]);
    daemon.wait_for(Duration::from_secs(120), "a match before the reload", |e| e["event"] == "match");
    until(&notes, Duration::from_secs(30), "READY=1", |n| n.has("READY=1"));

    // A stricter threshold (and a renamed camera, which needs a restart): applied without a restart.
    write("0.99", "porch");
    daemon.signal("HUP");
    until(&notes, Duration::from_secs(30), "RELOADING=1", |n| n.has("RELOADING=1"));
    let reloaded = until(&notes, Duration::from_secs(30), "READY=1 after the reload", |n| n.has("READY=1"));
    let status = reloaded.last().unwrap().status().unwrap_or_default().to_owned();
    assert!(status.starts_with("reloaded") && status.contains("cameras changed"), "{status}");
    // Each pass over the folder is a one-frame visit: its final event is its decision.
    let after = daemon.wait_for(Duration::from_secs(60), "a visit decided under the new threshold", |e| {
        e["phase"] == "final" && e["event"] == "unknown"
    });
    assert_eq!(after["camera"], "door", "cameras change at a restart, not at a reload");

    // A broken config is refused; the daemon goes on with the one it has.
    std::fs::write(&cfg, "version = 7\n").unwrap();
    daemon.signal("HUP");
    let refused = until(&notes, Duration::from_secs(30), "READY=1 after the refused reload", |n| n.has("READY=1"));
    let status = refused.last().unwrap().status().unwrap_or_default().to_owned();
    assert!(status.contains("reload refused") && status.contains("version = 7"), "{status}");
    daemon.wait_for(Duration::from_secs(60), "events after the refused reload", |e| e["phase"] == "final");
    let (code, _) = daemon.terminate();
    assert!(code.success(), "{code:?}");
}
