//! Faults the box will meet: the process killed mid-enroll (power cut, OOM killer) and a disk that
//! fills up. The gallery must stay whole: every identity complete or absent, the database
//! passing `PRAGMA integrity_check`, and a running daemon must keep recognising and recover.

use crate::common::{enroll_tony_blair, lfw_image, stderr, Daemon};
use farsight::{Gallery, OpenMode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The gallery's integrity check and its identities with their template counts.
fn inspect(g: &Path) -> (String, Vec<(String, usize)>) {
    let conn = rusqlite::Connection::open(g).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    let list = Gallery::open(g, OpenMode::MustExist, None).unwrap().list().unwrap();
    (check, list.into_iter().map(|i| (i.name, i.templates)).collect())
}

/// A small pseudo-random generator (xorshift): kill times that differ from run to run.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn an_enroll_killed_at_random_points_leaves_every_identity_complete_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    enroll_tony_blair(&g);
    let photos: Vec<PathBuf> = (1..=4).map(|n| lfw_image("George_W_Bush", n)).collect();
    let enroll = |name: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_farsight"));
        c.args(["-q", "enroll", "--largest", "--gallery", g.to_str().unwrap(), "--name", name]).args(&photos);
        c.env("RUST_LOG", "error").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c
    };
    // How long a whole enroll takes here and now: kills are spread over 0-110% of it.
    let t = Instant::now();
    assert!(enroll("Whole").status().unwrap().success());
    let whole = t.elapsed();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let (mut complete, mut absent) = (0, 0);
    for i in 0..30 {
        let name = format!("Killed {i}");
        let mut child = enroll(&name).spawn().unwrap();
        std::thread::sleep(whole.mul_f64(1.1 * rng.next_f64()));
        let _ = child.kill(); // SIGKILL; an enroll that already finished is simply reaped
        child.wait().unwrap();
        let (check, ids) = inspect(&g);
        assert_eq!(check, "ok", "kill {i} (seed {seed}): integrity check");
        for (who, n) in &ids {
            let want = if who == "Tony Blair" { 2 } else { photos.len() };
            assert_eq!(*n, want, "kill {i} (seed {seed}): {who} has {n} of its {want} templates: {ids:?}");
        }
        if ids.iter().any(|(who, _)| *who == name) {
            complete += 1;
        } else {
            absent += 1;
        }
    }
    eprintln!("30 kills over 0-110% of a {whole:?} enroll (seed {seed}): {complete} complete, {absent} absent");
}

/// A size-limited tmpfs mounted for the test (root only), unmounted on drop.
struct SmallDisk(PathBuf);
impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output();
        let ok = out.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "the disk-full test mounts a {size} tmpfs and needs root (CI runs as root): {:?}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
        Self(at.to_owned())
    }

    /// Writes a filler file until the disk is full; returns it.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xAAu8; 16 * 1024];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        // The last partial block: fill byte by byte.
        while std::io::Write::write_all(&mut f, &[0xAA]).is_ok() {}
        filler
    }
}
impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_an_enroll_cleanly_and_a_run_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "4m");
    let g = disk.0.join("g.db");
    enroll_tony_blair(&g);

    // The disk fills up: the enroll fails with what to do...
    let filler = disk.fill();
    let bush = lfw_image("George_W_Bush", 1);
    let out = Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["enroll", "--largest", "--gallery", g.to_str().unwrap(), "--name", "George W Bush"])
        .arg(&bush)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is full"), "{}", stderr(&out));
    // ...and the previous gallery is intact (read once there is room for SQLite's -shm file).
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(inspect(&g), ("ok".to_owned(), vec![("Tony Blair".to_owned(), 2)]));

    // A run whose disk fills up: recognition goes on (events on stdout), the SQLite sink counts
    // its failed writes, and stores events again once there is room.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let status = dir.path().join("status.json");
    let cfg = dir.path().join("farsight.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\ngallery = {g:?}\n[track]\nlost_after_s = 0.3\n[pipeline]\nstatus_interval_s = 0.3\n\
             status_file = {status:?}\n[sinks]\nretries = 1\nretry_backoff_ms = 100\n[sinks.sqlite]\n\
             [[camera]]\nname = \"door\"\nurl = {frames:?}\nlive = true\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap(), "run"]);
    let sink_stats = || -> Option<(u64, u64)> {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).ok()?).ok()?;
        let sink = s["stages"].as_array()?.iter().find(|s| s["name"] == "sink-sqlite")?.clone();
        Some((sink["out"].as_u64()?, sink["errors"].as_u64()? + sink["dropped"].as_u64()?))
    };
    let stored = || -> i64 {
        rusqlite::Connection::open(&g)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let final_event = |what: &str| {
        daemon.wait_for(Duration::from_secs(90), what, |e| e["phase"] == "final" && e["identity"] == "Tony Blair");
    };
    final_event("a final event with room on the disk");
    let filler = disk.fill();
    let failed_before = sink_stats().map_or(0, |s| s.1);
    for visit in 0..2 {
        final_event(&format!("final event {visit} on the full disk"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_stats().is_none_or(|(_, failed)| failed <= failed_before) {
        assert!(Instant::now() < deadline, "the SQLite sink never counted a failed write: {:?}", sink_stats());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (out_full, _) = sink_stats().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while sink_stats().is_none_or(|(out, _)| out <= out_full) {
        assert!(Instant::now() < deadline, "no event stored after space returned: {:?}", sink_stats());
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, _) = daemon.terminate();
    assert!(code.success(), "exit {code:?}");
    let (check, ids) = inspect(&g);
    assert_eq!((check.as_str(), ids.len()), ("ok", 1));
    eprintln!(
        "disk full: enroll refused, gallery intact; run: sink (stored, failed) {:?}, {} events in the table",
        sink_stats(),
        stored()
    );
    drop(disk);
}
