//! The event sinks against real parts: an HTTP receiver on a loopback socket, the gallery's SQLite
//! file, the fan-out with a sink that never returns, and (in `mqtt`) a real mosquitto broker.

mod mqtt;

use crossbeam_channel::{bounded, Receiver};
use farsight::config::{SinksConfig, SqliteSinkConfig, WebhookSinkConfig};
use farsight::event::{BestShot, TrackDecision, TrackEvent};
use farsight::gallery::Candidate;
use farsight::geometry::Rect;
use farsight::sink::{EventSink, SinkError, SinkSummary, Sinks, SqliteSink, WebhookSink};
use farsight::{Gallery, OpenMode};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A plausible final event of track `track` on `camera`, last seen now.
pub fn event(camera: &str, track: u64) -> TrackEvent {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    TrackEvent {
        event: TrackDecision::Unknown,
        phase: farsight::event::Phase::Final,
        update: false,
        camera: camera.to_owned(),
        track,
        identity: "unknown".to_owned(),
        score: Some(0.12),
        candidates: vec![Candidate { name: "ada".into(), score: 0.12 }],
        best_shot: BestShot {
            frame: 4,
            rect: Rect { x: 1.0, y: 2.0, w: 20.0, h: 25.0 },
            face_px: 20.0,
            aligned_px: 26.0,
            restored: true,
            restorer: Some("ftlgan".into()),
            embedder: Some("sface".into()),
            detector_score: 0.8,
            quality: 0.5,
            crop: None,
        },
        first_seen_ms: now - 1000,
        last_seen_ms: now,
        first_seen_s: 0.0,
        last_seen_s: 1.0,
        frames_seen: 9,
        frames_used: 5,
        visitor: None,
        visitor_visits: None,
        visitor_cameras: None,
    }
}

fn quiet_config() -> SinksConfig {
    SinksConfig { stdout: false, queue: 64, retries: 3, retry_backoff_ms: 20, ..Default::default() }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < until, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

use crate::common::free_port;

// ---------------------------------------------------------------------------------------------
// Webhook: a minimal HTTP/1.1 receiver on loopback.

/// What the receiver does with the n-th request (1-based); past the script it answers 200.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request, then says nothing for this long and hangs up.
    Silence(Duration),
}

/// One request as received: its header lines and its body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<String>,
    body: String,
}

struct Receiver_ {
    url: String,
    attempts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
}

fn receiver(script: Vec<Answer>) -> Receiver_ {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    {
        let (attempts, requests) = (attempts.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (attempts, requests, script) = (attempts.clone(), requests.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &attempts, &requests, &script));
            }
        });
    }
    Receiver_ { url, attempts, requests }
}

/// Reads one request (headers, then a Content-Length body) and answers per the script.
fn serve(stream: TcpStream, attempts: &AtomicUsize, requests: &Mutex<Vec<Received>>, script: &[Answer]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let length = headers
        .iter()
        .find_map(|h| h.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0usize);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let n = attempts.fetch_add(1, SeqCst);
    requests.lock().unwrap().push(Received { headers, body: String::from_utf8(body).unwrap() });
    let mut stream = stream;
    match script.get(n).copied().unwrap_or(Answer::Status(200)) {
        Answer::Silence(d) => std::thread::sleep(d),
        Answer::Status(code) => {
            let _ = write!(stream, "HTTP/1.1 {code} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno");
        }
    }
}

#[test]
fn webhook_retries_a_500_and_a_timeout_then_delivers() {
    // The silence outlasts the client's timeout by seconds, so a slow machine cannot turn a
    // timely answer into a timeout (or the other way round).
    let rx = receiver(vec![Answer::Status(500), Answer::Silence(Duration::from_secs(6)), Answer::Status(200)]);
    let hook = WebhookSinkConfig { url: rx.url.clone(), timeout_ms: 2000, bearer_token: Some("s3cret".into()) };
    let sinks = Sinks::from_sinks(vec![Box::new(WebhookSink::new(&hook).unwrap())], &quiet_config()).unwrap();
    sinks.publish(event("gate", 42));
    let stats = sinks.stats()[0].clone();
    // publish returned before the delivery (which needs a 500 and a 2 s timeout first).
    assert_eq!(stats.snapshot().output, 0);
    wait_until(Duration::from_secs(30), "the delivery", || stats.snapshot().output == 1);
    let summary = sinks.close(Duration::from_secs(5));
    assert_eq!(summary, vec![SinkSummary { name: "webhook".into(), delivered: 1, dropped: 0, finished: true }]);
    assert_eq!(rx.attempts.load(SeqCst), 3);
    assert_eq!(stats.snapshot().errors, 2);
    let requests = rx.requests.lock().unwrap();
    let last = &requests[2];
    assert!(last.headers[0].starts_with("POST /hook HTTP/1.1"), "{:?}", last.headers);
    let has = |h: &str| last.headers.iter().any(|l| l.eq_ignore_ascii_case(h));
    assert!(has("content-type: application/json"), "{:?}", last.headers);
    assert!(has("authorization: Bearer s3cret"), "{:?}", last.headers);
    let v: serde_json::Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!((v["camera"].as_str(), v["track"].as_u64()), (Some("gate"), Some(42)));
}

#[test]
fn webhook_does_not_retry_a_400() {
    let rx = receiver(vec![Answer::Status(400)]);
    let hook = WebhookSinkConfig { url: rx.url.clone(), timeout_ms: 2000, bearer_token: None };
    let mut sink = WebhookSink::new(&hook).unwrap();
    let r = sink.deliver(&event("gate", 1));
    assert!(matches!(r, Err(SinkError::Permanent { .. })), "{r:?}");
    // Through the runner: the 400 is dropped after one attempt, the next event goes through.
    let rx = receiver(vec![Answer::Status(400)]);
    let hook = WebhookSinkConfig { url: rx.url.clone(), timeout_ms: 2000, bearer_token: None };
    let sinks = Sinks::from_sinks(vec![Box::new(WebhookSink::new(&hook).unwrap())], &quiet_config()).unwrap();
    sinks.publish(event("gate", 1));
    sinks.publish(event("gate", 2));
    let summary = sinks.close(Duration::from_secs(5));
    assert_eq!(summary, vec![SinkSummary { name: "webhook".into(), delivered: 1, dropped: 1, finished: true }]);
    assert_eq!(rx.attempts.load(SeqCst), 2);
    assert!(rx.requests.lock().unwrap()[0]
        .headers
        .iter()
        .all(|h| !h.to_ascii_lowercase().starts_with("authorization")));
}

// ---------------------------------------------------------------------------------------------
// SQLite: the gallery database's events table.

fn event_tracks(gallery: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(gallery).unwrap();
    let mut st = conn.prepare("SELECT track FROM events ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn sqlite_sink_stores_events_and_keeps_at_most_max_events() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.db");
    let config = SinksConfig { sqlite: Some(SqliteSinkConfig { retention_days: 30, max_events: 5 }), ..quiet_config() };
    let sinks = Sinks::start(&config, &gallery).unwrap();
    assert_eq!(sinks.names(), vec!["sqlite"]);
    for track in 1..=12 {
        sinks.publish(event("hall", track));
    }
    let summary = sinks.close(Duration::from_secs(5));
    assert_eq!(summary, vec![SinkSummary { name: "sqlite".into(), delivered: 12, dropped: 0, finished: true }]);
    assert_eq!(event_tracks(&gallery), vec![8, 9, 10, 11, 12]);
    let conn = rusqlite::Connection::open(&gallery).unwrap();
    let (camera, decision, frames, json): (String, String, i64, String) = conn
        .query_row("SELECT camera, event, frames_seen, json FROM events WHERE track = 12", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((camera.as_str(), decision.as_str(), frames), ("hall", "unknown", 9));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["best_shot"]["face_px"], 20.0);
    // The gallery itself still opens and works.
    assert!(Gallery::open(&gallery, OpenMode::MustExist, None).unwrap().list().unwrap().is_empty());
}

/// The gallery schema as farsight released it at version 1 (before the events table).
const GALLERY_V1: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL) STRICT;
    CREATE TABLE templates (
        id INTEGER PRIMARY KEY,
        identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL, embedder_sha256 TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
        source TEXT NOT NULL, face_px REAL NOT NULL, created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX templates_by_identity ON templates(identity_id);
    INSERT INTO meta (key, value) VALUES ('schema_version', '1');
    INSERT INTO identities (name, created_at) VALUES ('ada', 0);";

#[test]
fn sqlite_sink_migrates_a_version_1_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("old.db");
    rusqlite::Connection::open(&gallery).unwrap().execute_batch(GALLERY_V1).unwrap();
    let mut sink = SqliteSink::open(&gallery, &SqliteSinkConfig::default()).unwrap();
    sink.deliver(&event("hall", 5)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    assert_eq!(event_tracks(&gallery), vec![5]);
    let g = Gallery::open(&gallery, OpenMode::MustExist, None).unwrap();
    assert_eq!(g.list().unwrap()[0].name, "ada");
    let conn = rusqlite::Connection::open(&gallery).unwrap();
    let v: String = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, farsight::gallery::SCHEMA_VERSION.to_string());
}

// ---------------------------------------------------------------------------------------------
// Fan-out: a sink that never returns must not hold up publish or the other sinks.

/// Blocks in its first delivery until released (the test releases it at the end).
struct Stuck {
    entered: crossbeam_channel::Sender<()>,
    release: Receiver<()>,
}

impl EventSink for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    fn deliver(&mut self, _: &TrackEvent) -> Result<(), SinkError> {
        let _ = self.entered.try_send(());
        let _ = self.release.recv();
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn a_stuck_sink_neither_blocks_publish_nor_starves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.db");
    let (entered_tx, entered) = bounded(1);
    let (release, release_rx) = bounded(1);
    let stuck = Stuck { entered: entered_tx, release: release_rx };
    let sqlite = SqliteSink::open(&gallery, &SqliteSinkConfig::default()).unwrap();
    let config = SinksConfig { queue: 4, ..quiet_config() };
    let sinks = Sinks::from_sinks(vec![Box::new(stuck), Box::new(sqlite)], &config).unwrap();
    sinks.publish(event("yard", 0));
    entered.recv_timeout(Duration::from_secs(5)).unwrap();
    let sqlite_stats = sinks.stats()[1].clone();
    for track in 1..20 {
        // The stuck sink never returns until released below: a publish that waited for it would
        // hang here, so returning at all is the proof.
        sinks.publish(event("yard", track));
        // Let the SQLite sink keep up, so only the stuck sink's queue can fill.
        wait_until(Duration::from_secs(20), "the SQLite insert", || sqlite_stats.snapshot().output == track + 1);
    }
    // One in the stuck delivery, four queued, fifteen dropped at once.
    assert_eq!(sinks.stats()[0].snapshot().dropped, 15);
    let t = Instant::now();
    let summary = sinks.close(Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(10), "close took {:?}", t.elapsed());
    assert_eq!(
        summary,
        vec![
            SinkSummary { name: "stuck".into(), delivered: 0, dropped: 19, finished: false },
            SinkSummary { name: "sqlite".into(), delivered: 20, dropped: 0, finished: true },
        ]
    );
    assert_eq!(event_tracks(&gallery), (0..20).collect::<Vec<i64>>());
    release.send(()).unwrap();
}
