//! Cameras end to end with real parts: a video file to EOS, an RTSP camera whose server dies and
//! comes back, and a live source far faster than recognition (bounded memory, counted drops).

use crate::common::{enroll_tony_blair, farsight, lfw_image, stderr, Daemon};
use crate::video::{free_port, make_face_video, RtspServer, VideoSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A gallery with Tony Blair (photos 1 and 2) and a 6 s video of his photo 3 appearing twice
/// (0-2 s and 4-6 s, grey frames between).
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    setup_in(dir, "I420")
}

fn setup_in(dir: &Path, format: &str) -> (PathBuf, PathBuf) {
    let gallery = dir.join("g.db");
    enroll_tony_blair(&gallery);
    (gallery, blair_video(&dir.join("blair.mp4"), format))
}

/// Tony Blair's photo 3 appearing at 0-2 s and 4-6 s of a 320x240 H.264 video of raw `format`.
fn blair_video(out: &Path, format: &str) -> PathBuf {
    let spec = VideoSpec {
        photo: &lfw_image("Tony_Blair", 3),
        width: 320,
        height: 240,
        frames: 60,
        fps: 10,
        photo_px: 120,
        spans: &[0..20, 40..60],
        format,
    };
    make_face_video(out, &spec)
}

fn events_of(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_video_file_runs_to_eos_with_one_match_per_appearance() {
    let dir = tempfile::tempdir().unwrap();
    let (gallery, video) = setup(dir.path());
    let run = farsight(&["run", "--gallery", gallery.to_str().unwrap(), "--source", video.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let all = events_of(&run.stdout);
    for e in &all {
        assert_eq!((&e["event"], &e["identity"]), (&"match".into(), &"Tony Blair".into()), "{e}");
        assert_eq!(e["camera"], "blair");
    }
    // Each appearance: one decision while he is on screen, then one final event.
    let phase = |p: &str| all.iter().filter(|e| e["phase"] == p).cloned().collect::<Vec<_>>();
    let (decisions, events) = (phase("decision"), phase("final"));
    assert_eq!((decisions.len(), events.len(), all.len()), (2, 2, 4), "{all:#?}");
    for (d, f) in decisions.iter().zip(&events) {
        assert_eq!(d["track"], f["track"]);
        assert!(d["last_seen_s"].as_f64() < f["last_seen_s"].as_f64(), "decided before the visit ended: {d} {f}");
    }
    // Stream time follows the video: the second visit starts at 4 s.
    let first_seen = |e: &serde_json::Value| e["first_seen_s"].as_f64().unwrap();
    assert!(first_seen(&events[0]) < 0.5 && (3.9..4.5).contains(&first_seen(&events[1])), "{events:#?}");
}

/// A run's log and its events: phase, identity and the second the visit began (which frame a
/// worker first searches varies a little from run to run).
fn run_logged(
    dir: &Path,
    gallery: &Path,
    video: &Path,
    config: &str,
    env: &[(&str, &str)],
) -> (String, Vec<serde_json::Value>) {
    let path = dir.join("run.toml");
    std::fs::write(&path, format!("version = 1\n{config}")).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(["--config", path.to_str().unwrap(), "run", "--gallery", gallery.to_str().unwrap(), "--source"])
        .arg(video)
        .env("RUST_LOG", "info")
        .env("FARSIGHT_HTTP_BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let events = events_of(&run.stdout)
        .into_iter()
        .map(|e| serde_json::json!([e["phase"], e["identity"], e["first_seen_s"].as_f64().map(f64::round)]))
        .collect();
    (stderr(&run), events)
}

/// The H.264 decoder a run picks, from its log, and its events as [`run_logged`] gives them.
fn decoded_by(dir: &Path, gallery: &Path, video: &Path, config: &str) -> (String, Vec<serde_json::Value>) {
    let (log, events) = run_logged(dir, gallery, video, config, &[]);
    let decoder = log.lines().find_map(|l| l.strip_suffix(" decodes the stream")?.rsplit(' ').next());
    (decoder.unwrap_or_else(|| panic!("no decoder in the log:\n{log}")).to_owned(), events)
}

/// The big-block heap's high water in MiB, from the line a run logs when it ends.
fn big_heap_high_water(log: &str) -> u64 {
    let tail = log.split("(big-block heap: ").nth(1).unwrap_or_else(|| panic!("no heap figures in the log:\n{log}"));
    tail.split(' ').next().unwrap().parse().unwrap()
}

/// The binary's allocator keeps big blocks in a heap of its own; `FARSIGHT_BIG_HEAP=off` leaves
/// every block to glibc (for heaptrack and valgrind, which see only malloc), and the events are
/// the same either way.
#[test]
fn the_big_block_heap_holds_the_models_unless_turned_off_and_changes_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let (gallery, video) = setup_in(dir.path(), "I420");
    let (log, with_heap) = run_logged(dir.path(), &gallery, &video, "", &[]);
    assert!(big_heap_high_water(&log) > 10, "{log}");
    let (log, without) = run_logged(dir.path(), &gallery, &video, "", &[("FARSIGHT_BIG_HEAP", "off")]);
    assert_eq!(big_heap_high_water(&log), 0, "{log}");
    assert_eq!(with_heap.len(), 4, "{with_heap:#?}");
    assert_eq!(without, with_heap);
}

/// `pipeline.h264_decoder`: 4:2:0 H.264 (what cameras send) goes to OpenH264 by default; a
/// stream OpenH264 cannot decode (4:4:4) goes to libav, as does every stream with `auto`. H.264
/// decoding is exact, so the events are the same whichever decodes.
#[test]
fn h264_goes_to_openh264_unless_it_cannot_decode_the_stream_or_auto_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (gallery, video) = setup_in(dir.path(), "I420");
    let (decoder, lean) = decoded_by(dir.path(), &gallery, &video, "");
    assert_eq!(decoder, "openh264dec");
    assert_eq!(lean.len(), 4, "{lean:#?}");
    let (decoder, auto) = decoded_by(dir.path(), &gallery, &video, "[pipeline]\nh264_decoder = \"auto\"\n");
    assert_eq!((decoder.as_str(), &auto), ("avdec_h264", &lean));
    let y444 = blair_video(&dir.path().join("blair444.mp4"), "Y444");
    let (decoder, events) = decoded_by(dir.path(), &gallery, &y444, "");
    assert_eq!((decoder.as_str(), events.len()), ("avdec_h264", 4), "{events:#?}");
}

#[test]
fn an_rtsp_camera_reconnects_after_its_server_dies_and_events_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (gallery, video) = setup(dir.path());
    let port = free_port();
    let server = RtspServer::start(port, &video);
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[track]\nlost_after_s = 1.0\n").unwrap();
    let (cfg, g) = (config.to_str().unwrap(), gallery.to_str().unwrap());
    let url = server.url.clone();
    let daemon = Daemon::start(dir.path(), &["--config", cfg, "run", "--gallery", g, "--source", &url]);
    let first = daemon.wait_for(Duration::from_secs(60), "match over RTSP", |e| e["event"] == "match");
    assert_eq!(first["identity"], "Tony Blair");

    // The server dies mid-stream; capture keeps retrying; the server comes back on the same port.
    drop(server);
    let killed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(3));
    let _server = RtspServer::start(port, &video);
    daemon.wait_for(Duration::from_secs(90), "match after the server restart", |e| {
        e["event"] == "match" && e["first_seen_ms"].as_u64().unwrap() > killed_ms
    });
    assert!(daemon.log().contains("reconnecting"), "{}", daemon.log());
    let (code, _) = daemon.terminate();
    assert!(code.success(), "exit {code:?}");
}

#[test]
fn a_source_far_faster_than_recognition_drops_frames_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (gallery, video) = setup(dir.path());
    // --live: the file is read as fast as it decodes (hundreds of frames a second) and loops, so
    // on a fast machine his visit never ends (the grey gap lasts milliseconds of wall time), on a
    // slow one it may: either way he must be announced while he is there, once per visit.
    let summary = dir.path().join("summary.json");
    let (g, v, s) = (gallery.to_str().unwrap(), video.to_str().unwrap(), summary.to_str().unwrap());
    let daemon = Daemon::start(dir.path(), &["run", "--live", "--gallery", g, "--source", v, "--summary", s]);
    let started = Instant::now();
    let decided = daemon.wait_for(Duration::from_secs(90), "a decision under overload", |e| e["phase"] == "decision");
    assert_eq!((&decided["event"], &decided["identity"]), (&"match".into(), &"Tony Blair".into()), "{decided}");
    std::thread::sleep(Duration::from_secs(15).saturating_sub(started.elapsed()));
    let before = daemon.seen();
    let (code, drained) = daemon.terminate();
    assert!(code.success(), "exit {code:?}");
    // SIGTERM drains: every visit announced but not yet closed gets its final event.
    let all: Vec<serde_json::Value> = before.iter().chain(&drained).cloned().collect();
    let tracks: std::collections::BTreeSet<u64> = all.iter().map(|e| e["track"].as_u64().unwrap()).collect();
    for t in tracks {
        let of = |p: &str| all.iter().filter(|e| e["track"] == t && e["phase"] == p).count();
        assert!(of("decision") <= 1, "track {t}: one decision per visit: {all:#?}");
        assert_eq!(of("final"), 1, "track {t}: its final event, drained at SIGTERM if it was open: {all:#?}");
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let camera = summary["stages"].as_array().unwrap().iter().find(|s| s["name"] == "camera-blair").unwrap();
    let (captured, dropped) = (camera["in"].as_u64().unwrap(), camera["dropped"].as_u64().unwrap());
    let recognized = summary["frames_recognized"].as_u64().unwrap();
    assert!(
        dropped > 0 && captured > 2 * recognized,
        "captured {captured}, dropped {dropped}, recognized {recognized}"
    );
    // Queues are bounded: memory stays at the models' footprint however many frames arrive.
    let peak_mib = summary["peak_rss_kib"].as_u64().unwrap() / 1024;
    assert!(peak_mib < 1024, "peak RSS {peak_mib} MiB");
}
