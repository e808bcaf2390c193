use super::*;
use crate::gallery::Gallery;

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[i] = 1.0;
    v
}

fn near(i: usize, j: usize, t: f32) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[i] = 1.0 - t;
    v[j] = t;
    crate::embed::normalize(v).unwrap()
}

fn sighting<'a>(camera: &'a str, track: u64, v: &'a [f32], quality: f32, at: i64) -> Sighting<'a> {
    Sighting {
        camera,
        track,
        embedding: v,
        embedder: "sface",
        quality,
        face_px: 40.0,
        first_seen_ms: at,
        last_seen_ms: at + 1000,
        crop: None,
    }
}

const MATCH: Attach = Attach::Match { linkage: Linkage::Centroid, threshold: 0.5 };
const FALLBACK: (Linkage, f32) = (Linkage::Centroid, 0.5);

fn id() -> EmbedderId {
    EmbedderId { name: "sface-2021dec".into(), sha256: "ab".repeat(32) }
}

#[test]
fn a_similar_unknown_joins_and_a_different_one_founds_a_visitor() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let a = unit(0);
    let r1 = record(&mut g, &mut cache, &sighting("door", 1, &a, 0.5, 1000), MATCH, FALLBACK).unwrap();
    assert!(r1.new);
    assert_eq!((r1.visits, r1.cameras.clone()), (1, vec!["door".to_owned()]));
    let a2 = near(0, 1, 0.1);
    let r2 = record(&mut g, &mut cache, &sighting("yard", 2, &a2, 0.6, 5000), MATCH, FALLBACK).unwrap();
    assert_eq!(r2.id, r1.id);
    assert!(!r2.new);
    assert_eq!(r2.visits, 2);
    assert_eq!(r2.cameras.len(), 2);
    let b = unit(5);
    let r3 = record(&mut g, &mut cache, &sighting("door", 3, &b, 0.5, 6000), MATCH, FALLBACK).unwrap();
    assert_ne!(r3.id, r1.id);
    let all = list(&mut g).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, r3.id.to_string(), "most recently seen first");
    let v1 = get(&mut g, r1.id).unwrap();
    assert_eq!((v1.first_seen_ms, v1.last_seen_ms, v1.embeddings), (1000, 6000, 2));
}

#[test]
fn a_continued_visit_is_not_counted_twice_and_replaces_the_decisions_embedding() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let a = unit(0);
    let first = record(&mut g, &mut cache, &sighting("door", 1, &a, 0.5, 0), MATCH, FALLBACK).unwrap();
    let better = near(0, 1, 0.05);
    let mut s = sighting("door", 1, &better, 0.9, 0);
    s.crop = Some("/nowhere/farsight-door-1-1.png");
    let again =
        record(&mut g, &mut cache, &s, Attach::Continue { id: first.id, replace: first.row }, FALLBACK).unwrap();
    assert_eq!((again.id, again.visits), (first.id, 1));
    let v = get(&mut g, first.id).unwrap();
    assert_eq!(v.embeddings, 1, "the decision's embedding was replaced");
    assert_eq!(v.best_shot.as_deref(), Some("/nowhere/farsight-door-1-1.png"));
}

#[test]
fn at_most_keep_embeddings_are_kept_the_best_by_quality() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let vs: Vec<Vec<f32>> = (0..9).map(|i| near(0, 1, 0.01 * i as f32)).collect();
    let mut id = None;
    for (i, v) in vs.iter().enumerate() {
        let r = record(&mut g, &mut cache, &sighting("door", i as u64, v, 0.1 * i as f32, 0), MATCH, FALLBACK).unwrap();
        id = Some(r.id);
    }
    let v = get(&mut g, id.unwrap()).unwrap();
    assert_eq!((v.visits, v.embeddings), (9, KEEP));
    let qualities: Vec<f64> = g
        .connection()
        .prepare("SELECT quality FROM visitor_embeddings ORDER BY quality DESC")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!((qualities[KEEP - 1] - 0.4).abs() < 1e-6, "{qualities:?}");
}

#[test]
fn naming_enrolls_every_kept_embedding_and_deletes_the_visitor_all_or_nothing() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let (a, a2) = (unit(0), near(0, 1, 0.1));
    let r = record(&mut g, &mut cache, &sighting("door", 1, &a, 0.5, 0), MATCH, FALLBACK).unwrap();
    record(&mut g, &mut cache, &sighting("door", 2, &a2, 0.6, 0), MATCH, FALLBACK).unwrap();
    // A refused name writes nothing.
    assert!(matches!(name(&mut g, r.id, "unknown", &id()), Err(VisitorError::Gallery(GalleryError::BadName { .. }))));
    assert!(matches!(name(&mut g, VisitorId(99), "Ada", &id()), Err(VisitorError::Unknown(VisitorId(99)))));
    assert!(g.list().unwrap().is_empty());
    let named = name(&mut g, r.id, "Ada", &id()).unwrap();
    assert_eq!((named.created, named.templates), (true, 2));
    let ids = g.list().unwrap();
    assert_eq!((ids[0].name.as_str(), ids[0].templates), ("Ada", 2));
    assert!(list(&mut g).unwrap().is_empty());
    assert_eq!(g.snapshot().unwrap().search(&a, 1)[0].name, "Ada");
    // Naming another visitor as an existing identity adds to it.
    let b = unit(7);
    let r = record(&mut g, &mut cache, &sighting("door", 3, &b, 0.5, 0), MATCH, FALLBACK).unwrap();
    let named = name(&mut g, r.id, "Ada", &id()).unwrap();
    assert_eq!((named.created, named.templates), (false, 1));
    assert_eq!(g.list().unwrap()[0].templates, 3);
}

#[test]
fn merge_moves_visits_cameras_and_embeddings() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let (a, b) = (unit(0), unit(9));
    let ra = record(&mut g, &mut cache, &sighting("door", 1, &a, 0.5, 0), MATCH, FALLBACK).unwrap();
    let rb = record(&mut g, &mut cache, &sighting("yard", 2, &b, 0.5, 10_000), MATCH, FALLBACK).unwrap();
    record(&mut g, &mut cache, &sighting("yard", 3, &b, 0.5, 20_000), MATCH, FALLBACK).unwrap();
    assert!(matches!(merge(&mut g, ra.id, ra.id), Err(VisitorError::SameVisitor(_))));
    assert!(matches!(merge(&mut g, ra.id, VisitorId(77)), Err(VisitorError::Unknown(VisitorId(77)))));
    let merged = merge(&mut g, rb.id, ra.id).unwrap();
    assert_eq!((merged.visits, merged.embeddings, merged.cameras.len()), (3, 3, 2));
    assert_eq!(merged.cameras[0].camera, "yard", "most visited first");
    assert_eq!((merged.first_seen_ms, merged.last_seen_ms), (0, 21_000));
    assert!(matches!(get(&mut g, rb.id), Err(VisitorError::Unknown(_))));
    // The pipeline's cache sees the merge: b's face now joins a.
    let r = record(&mut g, &mut cache, &sighting("door", 4, &b, 0.5, 30_000), MATCH, FALLBACK).unwrap();
    assert_eq!((r.id, r.visits), (ra.id, 4));
}

#[test]
fn ignore_forget_and_retention() {
    let mut g = Gallery::open_in_memory(None).unwrap();
    let mut cache = Cache::default();
    let (a, b, c) = (unit(0), unit(1), unit(2));
    let ra = record(&mut g, &mut cache, &sighting("door", 1, &a, 0.5, 0), MATCH, FALLBACK).unwrap();
    assert!(set_ignored(&mut g, ra.id, true).unwrap().ignored);
    let again = record(&mut g, &mut cache, &sighting("door", 2, &a, 0.5, 1), MATCH, FALLBACK).unwrap();
    assert!(again.ignored);
    count_suppressed(&mut g, ra.id).unwrap();
    assert_eq!(get(&mut g, ra.id).unwrap().suppressed, 1);
    assert!(matches!(set_ignored(&mut g, VisitorId(5), true), Err(VisitorError::Unknown(_))));
    let gone = forget(&mut g, ra.id).unwrap();
    assert_eq!(gone.events, 0);
    assert!(matches!(forget(&mut g, ra.id), Err(VisitorError::Unknown(_))));
    let left: i64 = g
        .connection()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM visitor_embeddings) + (SELECT COUNT(*) FROM visitor_cameras)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    // Retention: b is 40 days old, c recent; then a count of 0 removes c too.
    let day = 86_400_000;
    record(&mut g, &mut cache, &sighting("door", 3, &b, 0.5, 0), MATCH, FALLBACK).unwrap();
    record(&mut g, &mut cache, &sighting("door", 4, &c, 0.5, 40 * day), MATCH, FALLBACK).unwrap();
    assert_eq!(enforce_retention(&mut g, 30, 10, 41 * day).unwrap(), 1);
    assert_eq!(list(&mut g).unwrap().len(), 1);
    assert_eq!(enforce_retention(&mut g, 30, 10, 41 * day).unwrap(), 0);
    assert_eq!(enforce_retention(&mut g, 30, 0, 41 * day).unwrap(), 1);
    assert!(list(&mut g).unwrap().is_empty());
}

#[test]
fn ids_are_v_and_digits_only() {
    assert_eq!(VisitorId::parse("v17").unwrap(), VisitorId(17));
    assert_eq!(VisitorId(17).to_string(), "v17");
    for bad in ["17", "v", "v-1", "v1.5", "../x", "v1/..", "v 1", "v99999999999999999999", "V1"] {
        assert!(matches!(VisitorId::parse(bad), Err(VisitorError::BadId(_))), "{bad}");
    }
}
