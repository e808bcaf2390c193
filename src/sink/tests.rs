//! Unit tests of the fan-out and the runner's retry and shutdown policy, with small in-process
//! sinks whose failures are scripted; the real sinks are tested in their modules and in
//! `tests/integration/sinks.rs`.

use super::*;
use crate::config::SinksConfig;
use crate::event::{BestShot, TrackDecision};
use crate::gallery::Candidate;
use crate::geometry::Rect;
use std::sync::Mutex;

/// A plausible final event of track `track` on `camera`, last seen now.
pub(crate) fn event(camera: &str, track: u64) -> TrackEvent {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    TrackEvent {
        event: TrackDecision::Match,
        phase: crate::event::Phase::Final,
        update: false,
        camera: camera.to_owned(),
        track,
        identity: "ada".to_owned(),
        score: Some(0.61),
        candidates: vec![Candidate { name: "ada".into(), score: 0.61 }],
        best_shot: BestShot {
            frame: 3,
            rect: Rect { x: 10.0, y: 20.0, w: 24.0, h: 30.0 },
            face_px: 24.0,
            aligned_px: 30.0,
            restored: true,
            restorer: Some("ftlgan".into()),
            embedder: Some("sface".into()),
            detector_score: 0.9,
            quality: 0.7,
            crop: None,
        },
        first_seen_ms: now - 1500,
        last_seen_ms: now,
        first_seen_s: 1.0,
        last_seen_s: 2.5,
        frames_seen: 12,
        frames_used: 5,
        visitor: None,
        visitor_visits: None,
        visitor_cameras: None,
    }
}

/// A sink that answers each delivery from a script (then succeeds), recording the tracks it got.
struct Scripted {
    script: Vec<Option<SinkError>>,
    got: Arc<Mutex<Vec<u64>>>,
    attempts: Arc<Mutex<u32>>,
}

impl EventSink for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        *self.attempts.lock().unwrap() += 1;
        if !self.script.is_empty() {
            if let Some(e) = self.script.remove(0) {
                return Err(e);
            }
        }
        self.got.lock().unwrap().push(event.track);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn transient() -> Option<SinkError> {
    Some(SinkError::Transient { sink: "scripted", message: "down".into() })
}

/// The tracks a [`Scripted`] sink delivered, and how many deliveries it was asked for.
type Delivered = (Arc<Mutex<Vec<u64>>>, Arc<Mutex<u32>>);

fn scripted(script: Vec<Option<SinkError>>) -> (Box<dyn EventSink>, Delivered) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(0));
    (Box::new(Scripted { script, got: got.clone(), attempts: attempts.clone() }), (got, attempts))
}

fn config(retries: u32, backoff_ms: u64) -> SinksConfig {
    SinksConfig { stdout: false, queue: 16, retries, retry_backoff_ms: backoff_ms, ..Default::default() }
}

#[test]
fn transient_failures_are_retried_until_delivered() {
    let (sink, (got, attempts)) = scripted(vec![transient(), transient()]);
    let sinks = Sinks::from_sinks(vec![sink], &config(3, 1)).unwrap();
    assert_eq!(sinks.names(), vec!["scripted"]);
    sinks.publish(event("door", 1));
    let stats = sinks.stats();
    let summary = sinks.close(Duration::from_secs(5));
    assert_eq!(*got.lock().unwrap(), vec![1]);
    assert_eq!(*attempts.lock().unwrap(), 3);
    let snap = stats[0].snapshot();
    assert_eq!(snap.name, "sink-scripted");
    assert_eq!((snap.input, snap.output, snap.errors, snap.dropped), (1, 1, 2, 0));
    assert!(snap.p50_ms.is_some());
    assert_eq!(summary, vec![SinkSummary { name: "scripted".into(), delivered: 1, dropped: 0, finished: true }]);
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let permanent = Some(SinkError::Permanent { sink: "scripted", message: "refused".into() });
    let (sink, (got, attempts)) = scripted(vec![permanent]);
    let sinks = Sinks::from_sinks(vec![sink], &config(5, 1)).unwrap();
    sinks.publish(event("door", 1));
    sinks.publish(event("door", 2));
    let summary = sinks.close(Duration::from_secs(5));
    assert_eq!(*got.lock().unwrap(), vec![2]);
    assert_eq!(*attempts.lock().unwrap(), 2);
    assert_eq!((summary[0].delivered, summary[0].dropped), (1, 1));
}

#[test]
fn retries_give_up_after_the_configured_count() {
    let (sink, (got, attempts)) = scripted(vec![transient(), transient(), transient()]);
    let sinks = Sinks::from_sinks(vec![sink], &config(2, 1)).unwrap();
    sinks.publish(event("door", 1));
    let summary = sinks.close(Duration::from_secs(5));
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert_eq!((summary[0].delivered, summary[0].dropped), (0, 1));
}

#[test]
fn close_cuts_a_long_backoff_short_and_counts_what_is_left() {
    let (sink, (got, _)) = scripted((0..100).map(|_| transient()).collect());
    // A 60 s backoff: without the shared deadline this would hold shutdown for minutes.
    let sinks = Sinks::from_sinks(vec![sink], &config(100, 60_000)).unwrap();
    for track in 0..5 {
        sinks.publish(event("door", track));
    }
    let t = Instant::now();
    let summary = sinks.close(Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(2), "close took {:?}", t.elapsed());
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(summary, vec![SinkSummary { name: "scripted".into(), delivered: 0, dropped: 5, finished: true }]);
}

#[test]
fn shutdown_sleep_ends_at_the_deadline() {
    let s = Arc::new(Shutdown::default());
    assert!(s.sleep(Duration::from_millis(5)));
    let s2 = s.clone();
    let t = Instant::now();
    let sleeper = std::thread::spawn(move || s2.sleep(Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(20));
    s.set_deadline(Instant::now() + Duration::from_millis(30));
    assert!(!sleeper.join().unwrap());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(s.expired());
}
