use super::*;
use crate::embed::{EmbedderId, EMBEDDING_DIM};
use crate::gallery::{Gallery, NewTemplate};
use crate::geometry::{Point, Rect};

fn unit(i: usize, mix: f32) -> Vec<f32> {
    // A unit vector mostly along axis i, tilted towards axis i + 1 by `mix`.
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[i] = 1.0;
    v[(i + 1) % EMBEDDING_DIM] = mix;
    normalize(v).unwrap()
}

fn matcher(people: &[(&str, usize)]) -> Matcher {
    let id = EmbedderId { name: "sface-2021dec".into(), sha256: "x".into() };
    let mut g = Gallery::open_in_memory(Some(&id)).unwrap();
    for &(name, axis) in people {
        g.enroll(name, &id, &[NewTemplate { vector: unit(axis, 0.0), source: "t".into(), face_px: 100.0 }]).unwrap();
    }
    Matcher { snapshot: Arc::new(g.snapshot().unwrap()), threshold: 0.363, small_face_threshold: 0.363, top_k: 3 }
}

fn sighting(x: f32, axis: usize, mix: f32, quality: f32) -> Sighting {
    let rect = Rect { x, y: 100.0, w: 40.0, h: 50.0 };
    let p = |dx: f32, dy: f32| Point { x: x + dx, y: 100.0 + dy };
    let face = Face {
        rect,
        score: 0.9,
        landmarks: [p(12.0, 20.0), p(28.0, 20.0), p(20.0, 30.0), p(14.0, 40.0), p(26.0, 40.0)],
    };
    Sighting::embedded(
        Observation {
            face,
            aligned_px: 50.0,
            restorer: None,
            embedder: crate::embed::EmbedderKind::Sface,
            embedding: unit(axis, mix),
        },
        quality,
        None,
    )
}

fn stamp(seq: u64) -> FrameStamp {
    FrameStamp { seq, ts: Duration::from_millis(100 * seq), wall: SystemTime::now() }
}

fn config() -> TrackConfig {
    TrackConfig::default()
}

#[test]
fn one_person_walking_past_is_one_event() {
    let m = matcher(&[("alice", 0), ("bob", 5)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    let mut events = Vec::new();
    for seq in 0..50 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(10.0 + 4.0 * seq as f32, 0, 0.3, 0.5)], &m));
    }
    // Said while she is there: one decision, as soon as the track has its announce_frames.
    assert_eq!(events.len(), 1, "one decision while the track is open");
    let d = &events[0].event;
    assert_eq!(
        (d.phase, d.event, d.identity.as_str(), d.update),
        (Phase::Decision, TrackDecision::Match, "alice", true)
    );
    assert_eq!(d.frames_seen, config().announce_frames);
    // Two seconds without the face closes the track: its one final event.
    events.extend(t.update(&cam, stamp(70), vec![], &m));
    assert_eq!(events.len(), 2);
    let e = &events[1].event;
    assert_eq!((e.phase, e.event, e.identity.as_str(), e.update), (Phase::Final, TrackDecision::Match, "alice", false));
    assert_eq!(e.frames_seen, 50);
    assert_eq!(e.frames_used, 5);
    assert_eq!(t.open_tracks(), 0);
}

#[test]
fn a_person_who_never_leaves_is_announced_while_there() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    let mut events = Vec::new();
    // Ten minutes at the door at 10 fps: one decision, no final (the visit is not over).
    for seq in 0..6000 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 0.1, 0.5)], &m));
    }
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].event.phase, events[0].event.identity.as_str()), (Phase::Decision, "alice"));
    assert!(events[0].event.last_seen_s < 0.5, "announced within its first frames");
}

#[test]
fn without_announce_a_visit_is_only_its_final_event() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(TrackConfig { announce: false, ..config() });
    let mut events = Vec::new();
    for seq in 0..30 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 0.1, 0.5)], &m));
    }
    events.extend(t.close_all(&m));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.phase, Phase::Final);
}

#[test]
fn a_stranger_is_one_unknown_event_not_fifty() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    let mut events = Vec::new();
    for seq in 0..50 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(200.0, 9, 0.0, 0.5)], &m));
    }
    events.extend(t.end_camera(&cam, &m));
    // Announced once unknown_after_s (2 s = 20 frames) has passed, then closed.
    let phases: Vec<Phase> = events.iter().map(|e| e.event.phase).collect();
    assert_eq!(phases, [Phase::Decision, Phase::Final]);
    assert!(events.iter().all(|e| e.event.event == TrackDecision::Unknown && e.event.identity == UNKNOWN));
    assert!((events[0].event.last_seen_s - 2.0).abs() < 0.05, "{}", events[0].event.last_seen_s);
}

#[test]
fn two_people_side_by_side_keep_their_own_tracks() {
    let m = matcher(&[("alice", 0), ("bob", 5)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    for seq in 0..20 {
        let x = 4.0 * seq as f32;
        t.update(&cam, stamp(seq), vec![sighting(x, 0, 0.2, 0.5), sighting(x + 300.0, 5, 0.2, 0.5)], &m);
    }
    let mut names: Vec<String> = t.close_all(&m).into_iter().map(|e| e.event.identity).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn a_different_face_in_the_same_place_starts_a_new_track() {
    let m = matcher(&[("alice", 0), ("bob", 5)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    t.update(&cam, stamp(0), vec![sighting(100.0, 0, 0.1, 0.5)], &m);
    t.update(&cam, stamp(1), vec![sighting(100.0, 5, 0.1, 0.5)], &m);
    let names: Vec<String> = t.close_all(&m).into_iter().map(|e| e.event.identity).collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn a_face_that_jumps_further_than_its_box_is_followed_by_its_embedding() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    t.update(&cam, stamp(0), vec![sighting(100.0, 0, 0.1, 0.5)], &m);
    // 60 px to the right: no overlap with a 40 px box, but the same person (and within max_jump).
    t.update(&cam, stamp(1), vec![sighting(160.0, 0, 0.1, 0.5)], &m);
    // Someone else appears at the same distance: a new track.
    t.update(&cam, stamp(2), vec![sighting(220.0, 7, 0.0, 0.5)], &m);
    let events = t.close_all(&m);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.frames_seen, 2);
}

#[test]
fn the_best_shots_decide_and_blurry_frames_do_not() {
    let m = matcher(&[("alice", 0), ("bob", 1)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(TrackConfig { best_shots: 3, ..config() });
    // Three sharp shots of alice, then many poor frames leaning towards bob.
    for seq in 0..3 {
        t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 0.2, 0.9)], &m);
    }
    for seq in 3..30 {
        t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 1.5, 0.1)], &m);
    }
    let e = &t.close_all(&m)[0].event;
    assert_eq!(e.identity, "alice");
    assert_eq!(e.frames_used, 3);
    assert!((e.best_shot.quality - 0.9).abs() < 1e-6);
}

#[test]
fn a_decision_is_announced_once_and_short_tracks_are_discarded() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(TrackConfig { min_frames: 3, ..config() });
    let mut events = Vec::new();
    for seq in 0..10 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 0.1, 0.5)], &m));
    }
    assert_eq!(events.len(), 1, "one early decision");
    assert!(events[0].event.update && events[0].event.event == TrackDecision::Match);
    // A one-frame blip elsewhere is dropped as noise at close.
    events.extend(t.update(&cam, stamp(10), vec![sighting(900.0, 9, 0.0, 0.5)], &m));
    events.extend(t.close_all(&m));
    assert_eq!(events.len(), 2);
    assert!(!events[1].event.update && events[1].event.phase == Phase::Final);
    assert_eq!(t.discarded, 1);
}

#[test]
fn a_changed_decision_is_an_update_and_the_final_event_says_the_last() {
    let m = matcher(&[("alice", 0), ("bob", 1)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(TrackConfig { best_shots: 2, ..config() });
    let mut events = Vec::new();
    // Poor shots that look like alice, then much better ones of bob in the same place.
    for seq in 0..5 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 0.6, 0.2)], &m));
    }
    for seq in 5..10 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(100.0, 0, 3.0, 0.9)], &m));
    }
    events.extend(t.close_all(&m));
    let said: Vec<(Phase, &str)> = events.iter().map(|e| (e.event.phase, e.event.identity.as_str())).collect();
    assert_eq!(said, [(Phase::Decision, "alice"), (Phase::Update, "bob"), (Phase::Final, "bob")]);
}

#[test]
fn quality_prefers_large_sharp_frontal_faces() {
    let s = sighting(0.0, 0, 0.0, 0.0);
    let face = s.face;
    let sharp =
        RgbImage::from_fn(
            112,
            112,
            |x, y| if (x / 4 + y / 4) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) },
        );
    let flat = RgbImage::from_pixel(112, 112, image::Rgb([128; 3]));
    let big_sharp = quality(&face, 112.0, &sharp);
    assert!(big_sharp > quality(&face, 112.0, &flat));
    assert!(big_sharp > quality(&face, 20.0, &sharp));
    let mut turned = face;
    turned.landmarks[2].x += 10.0;
    assert!(big_sharp > quality(&turned, 112.0, &sharp));
    assert!((0.0..=1.0).contains(&big_sharp));
}

#[test]
fn unembedded_sightings_follow_a_track_by_its_predicted_box_and_never_open_one() {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    let mut t = Tracker::new(config());
    // A small face moving 8 px a frame (more than a third of its width): followed by prediction.
    let small = |x: f32, embedded: bool| {
        let mut s = sighting(x, 0, 0.1, 0.5);
        s.face.rect.w = 16.0;
        s.face.rect.h = 20.0;
        if !embedded {
            s.embedding = None;
        }
        s
    };
    t.update(&cam, stamp(0), vec![small(100.0, true)], &m);
    t.update(&cam, stamp(1), vec![small(108.0, true)], &m);
    for seq in 2..20 {
        t.update(&cam, stamp(seq), vec![small(100.0 + 8.0 * seq as f32, false)], &m);
    }
    assert_eq!(t.open_tracks(), 1, "one track for the whole walk");
    let hints = t.hints(&cam);
    assert!((hints[0].velocity.0 - 80.0).abs() < 5.0, "about 80 px/s: {hints:?}");
    assert_eq!(hints[0].embeds, 2);
    // An unembedded face far from every track is dropped, not a new track.
    t.update(&cam, stamp(20), vec![small(900.0, false)], &m);
    assert_eq!((t.open_tracks(), t.unassigned), (1, 1));
    let events = t.close_all(&m);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].event.frames_seen, events[0].event.frames_used), (20, 2));
}

#[test]
fn a_track_of_small_face_shots_is_decided_with_the_small_face_threshold() {
    // A score of ~0.30 against alice's template: below match.threshold, above the small-face one.
    let mut m = matcher(&[("alice", 0)]);
    m.small_face_threshold = 0.25;
    let cam: Arc<str> = "door".into();
    let small = |seq: u64| {
        let mut s = sighting(10.0 + 4.0 * seq as f32, 0, 3.2, 0.5);
        s.embedder = crate::embed::EmbedderKind::Lrembed;
        s
    };
    let score = cosine(&unit(0, 3.2), &unit(0, 0.0));
    assert!(score > 0.25 && score < 0.363, "{score}");
    let mut t = Tracker::new(config());
    let mut events = Vec::new();
    for seq in 0..10 {
        events.extend(t.update(&cam, stamp(seq), vec![small(seq)], &m));
    }
    events.extend(t.update(&cam, stamp(40), vec![], &m));
    let last = &events.last().expect("a final event").event;
    assert_eq!((last.event, last.identity.as_str()), (TrackDecision::Match, "alice"));
    assert_eq!(last.best_shot.embedder.as_deref(), Some("lrembed"));
    // The same scores from SFace shots: match.threshold holds, the face is unknown.
    let mut t = Tracker::new(config());
    let mut events = Vec::new();
    for seq in 0..10 {
        events.extend(t.update(&cam, stamp(seq), vec![sighting(10.0 + 4.0 * seq as f32, 0, 3.2, 0.5)], &m));
    }
    events.extend(t.update(&cam, stamp(40), vec![], &m));
    assert_eq!(events.last().expect("a final event").event.event, TrackDecision::Unknown);
}

/// What a track says when alice's score wavers 0.015 either side of the 0.363 threshold for 8
/// frames, then falls clearly (0.2), with `track.update_margin = margin`.
fn wavering(margin: f32) -> Vec<(Phase, String)> {
    let m = matcher(&[("alice", 0)]);
    let cam: Arc<str> = "door".into();
    // One best shot, so the track's evidence is its latest (best-quality) face.
    let mut t = Tracker::new(TrackConfig { best_shots: 1, update_margin: margin, ..config() });
    let tilt = |cos: f32| (1.0 / (cos * cos) - 1.0).sqrt();
    let scores = [0.38, 0.38, 0.38, 0.35, 0.38, 0.35, 0.38, 0.35, 0.38, 0.35, 0.38, 0.2, 0.2, 0.2];
    let mut events = Vec::new();
    for (seq, cos) in scores.into_iter().enumerate() {
        let q = 0.1 + 0.01 * seq as f32;
        events.extend(t.update(&cam, stamp(seq as u64), vec![sighting(100.0, 0, tilt(cos), q)], &m));
    }
    events.extend(t.close_all(&m));
    events.into_iter().map(|e| (e.event.phase, e.event.identity)).collect()
}

#[test]
fn a_score_wavering_at_the_threshold_is_one_decision_not_a_flurry_of_updates() {
    let said = wavering(TrackConfig::default().update_margin);
    let said: Vec<(Phase, &str)> = said.iter().map(|(p, i)| (*p, i.as_str())).collect();
    assert_eq!(said, [(Phase::Decision, "alice"), (Phase::Update, "unknown"), (Phase::Final, "unknown")]);
    // Without the margin every crossing was an update (what the 640x480 bench video showed).
    assert!(wavering(0.0).len() >= 8, "{:?}", wavering(0.0));
}

#[test]
fn fusing_identical_shots_gives_that_shot() {
    let e = unit(4, 0.3);
    let fused = fuse([(0.9, e.as_slice()), (0.1, e.as_slice()), (0.0, e.as_slice())]).unwrap();
    assert!(fused.iter().zip(&e).all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn fusion_weighs_shots_by_quality_and_never_ignores_one() {
    let (a, b) = (unit(0, 0.0), unit(1, 0.0));
    let f = fuse([(0.9, a.as_slice()), (0.3, b.as_slice())]).unwrap();
    // Weights 0.9 and 0.3, re-normalised: the direction (3, 1) / sqrt(10).
    assert!((f[0] - 3.0 / 10f32.sqrt()).abs() < 1e-6 && (f[1] - 1.0 / 10f32.sqrt()).abs() < 1e-6, "{:?}", &f[..2]);
    // A zero (or NaN) quality still weighs 1e-3.
    let f = fuse([(0.0, a.as_slice()), (f32::NAN, b.as_slice())]).unwrap();
    assert!((f[0] - f[1]).abs() < 1e-6 && f[0] > 0.7);
    assert!(fuse(std::iter::empty()).is_none());
    assert!(fuse([(0.5, vec![0.0; EMBEDDING_DIM].as_slice())]).is_none());
}
