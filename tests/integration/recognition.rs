//! Enroll 20 LFW identities of folds 1-5, identify held-back photos of them, and check that a
//! stranger comes back unknown — with the real detector, aligner and embedder.

use crate::common::{datasets, enroll_tony_blair, farsight, lfw_image, recognizer, stderr};
use farsight::align::ALIGNED_SIZE;
use farsight::gallery::NewTemplate;
use farsight::recognize::to_event;
use farsight::restore::RestoreKind;
use farsight::source::images;
use farsight::{Config, Gallery, OpenMode};
use std::collections::BTreeSet;

/// Identities of the training folds (1-5) with at least `min_images` photos, by name.
fn training_identities(min_images: u32) -> Vec<String> {
    let pairs = farsight::eval::read_pairs(&datasets().join("lfw-pairs.txt")).unwrap();
    let names: BTreeSet<String> =
        pairs.iter().filter(|p| p.fold <= 5 && p.genuine).map(|p| p.first.name.clone()).collect();
    names.into_iter().filter(|n| lfw_image(n, min_images).is_file()).collect()
}

#[test]
fn enrolled_identities_are_identified_from_held_back_photos_and_a_stranger_is_unknown() {
    let rec = recognizer();
    let config = Config::default();
    let dir = tempfile::tempdir().unwrap();
    let mut gallery =
        Gallery::open(&dir.path().join("g.db"), OpenMode::CreateIfMissing, Some(rec.embedder().id())).unwrap();
    let candidates = training_identities(3);
    assert!(candidates.len() > 40, "too few training identities: {}", candidates.len());
    // Every 7th candidate: spread over the alphabet, deterministic.
    let enrolled: Vec<&String> = candidates.iter().step_by(7).take(20).collect();
    assert_eq!(enrolled.len(), 20);
    for name in &enrolled {
        let templates: Vec<NewTemplate> = [1, 2]
            .iter()
            .map(|&n| {
                let img = images::load(&lfw_image(name, n), &Default::default()).unwrap();
                let obs = rec.single_face(&img, true).unwrap().expect("a face in every enrolment photo");
                NewTemplate { vector: obs.embedding, source: format!("{name}_{n}"), face_px: obs.aligned_px }
            })
            .collect();
        gallery.enroll(name, rec.embedder().id(), &templates).unwrap();
    }
    let snapshot = gallery.snapshot().unwrap();
    assert_eq!((snapshot.identities(), snapshot.templates()), (20, 40));

    let (t, k) = (config.matching.threshold, config.matching.top_k);
    let mut correct = 0;
    let mut small_correct = 0;
    for name in &enrolled {
        let img = images::load(&lfw_image(name, 3), &Default::default()).unwrap();
        let obs = rec.single_face(&img, true).unwrap().expect("a face in the held-back photo");
        let event = to_event(&obs, &snapshot, t, k, "test", 0);
        correct += usize::from(event.identity == name.as_str());
        // The same photo seen from afar: shrunk so the face is ~24 px wide, then restored.
        let s = 24.0 / obs.face.rect.w;
        let (w, h) = img.dimensions();
        let tiny = image::imageops::resize(
            &img,
            (w as f32 * s) as u32,
            (h as f32 * s) as u32,
            image::imageops::FilterType::Triangle,
        );
        if let Ok(Ok(o)) = rec.single_face(&tiny, true) {
            assert!(o.restorer.is_some() && o.aligned_px < ALIGNED_SIZE as f32, "a 24 px face must be restored");
            small_correct += usize::from(to_event(&o, &snapshot, t, k, "test", 0).identity == name.as_str());
        }
    }
    eprintln!("top-1: {correct}/20 at full resolution, {small_correct}/20 at ~24 px");
    assert!(correct >= 18, "top-1 identification {correct}/20 at full resolution");
    assert!(small_correct >= 12, "top-1 identification {small_correct}/20 at ~24 px");

    // A stranger: a training-fold identity that was not enrolled.
    let stranger = candidates.iter().find(|n| !enrolled.contains(n)).unwrap();
    let img = images::load(&lfw_image(stranger, 1), &Default::default()).unwrap();
    let obs = rec.single_face(&img, true).unwrap().unwrap();
    let event = to_event(&obs, &snapshot, t, k, "test", 0);
    assert_eq!(event.identity, "unknown", "stranger {stranger} matched {:?}", event.candidates);
    assert!(!event.matched);
}

#[test]
fn cli_enroll_identify_and_run_emit_json_events() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("gallery.db");
    let out = enroll_tony_blair(&g);
    let g = g.to_str().unwrap();
    assert!(stderr(&out).contains("using the face at"), "enroll says which face was used: {}", stderr(&out));

    let list = farsight(&["gallery", "--gallery", g, "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "Tony Blair");
    assert_eq!(list[0]["templates"], 2);

    // A folder as one camera (one image a second): a held-back photo of him in three frames, then
    // a stranger. Each person-visit is one event, not one per frame.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        std::fs::copy(lfw_image("Tony_Blair", 3), frames.join(name)).unwrap();
    }
    std::fs::copy(lfw_image("Gerhard_Schroeder", 1), frames.join("d.jpg")).unwrap();
    let run = farsight(&["run", "--gallery", g, "--source", frames.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let all: Vec<serde_json::Value> =
        String::from_utf8_lossy(&run.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // He is announced while he is there (after announce_frames = 3 frames), then each visit closes
    // with its one final event; the one-frame stranger is never confident enough to announce.
    let phases: Vec<(&str, &str)> =
        all.iter().map(|e| (e["phase"].as_str().unwrap(), e["identity"].as_str().unwrap())).collect();
    assert_eq!(phases, [("decision", "Tony Blair"), ("final", "Tony Blair"), ("final", "unknown")], "{all:#?}");
    let events: Vec<&serde_json::Value> = all.iter().filter(|e| e["phase"] == "final").collect();
    assert_eq!((&events[0]["event"], &events[0]["identity"]), (&"match".into(), &"Tony Blair".into()));
    assert_eq!(events[0]["frames_seen"], 3);
    assert_eq!((&events[1]["event"], &events[1]["identity"]), (&"unknown".into(), &"unknown".into()));
    assert_eq!(events[1]["best_shot"]["frame"], 3);
    for e in &all {
        for key in [
            "camera",
            "track",
            "phase",
            "update",
            "score",
            "candidates",
            "first_seen_ms",
            "last_seen_ms",
            "frames_used",
        ] {
            assert!(e.get(key).is_some(), "event lacks {key}: {e}");
        }
        for key in ["box", "face_px", "aligned_px", "restored", "detector_score", "quality"] {
            assert!(e["best_shot"].get(key).is_some(), "best shot lacks {key}: {e}");
        }
    }

    let ident = farsight(&["identify", "--gallery", g, frames.join("a.jpg").to_str().unwrap()]);
    assert!(ident.status.success());
    assert!(String::from_utf8_lossy(&ident.stdout).contains("Tony Blair"));

    assert!(farsight(&["gallery", "--gallery", g, "rename", "Tony Blair", "Anthony Blair"]).status.success());
    assert!(farsight(&["gallery", "--gallery", g, "remove", "Anthony Blair"]).status.success());
    let gone = farsight(&["gallery", "--gallery", g, "remove", "Anthony Blair"]);
    assert!(!gone.status.success() && stderr(&gone).contains("no identity named"));
}

#[test]
fn ftlgan_int8_and_fp32_restore_a_real_face_alike_and_keep_it_matchable() {
    let rec = recognizer();
    let img = images::load(&lfw_image("Tony_Blair", 3), &Default::default()).unwrap();
    let (obs, aligned) = rec.observe_aligned(&img).unwrap().into_iter().next().expect("a face");
    let full = rec.embedder().embed(&aligned).unwrap();
    let int8 = rec.load_restorer(RestoreKind::Ftlgan).unwrap();
    let fp32 = rec.load_restorer(RestoreKind::FtlganFp32).unwrap();
    let cos = |a: &[f32], b: &[f32]| farsight::embed::cosine(a, b);
    for size in [14, 28] {
        let small = farsight::align::downsample(&aligned, size);
        let (r8, r32) = (int8.restore(&small).unwrap(), fp32.restore(&small).unwrap());
        let mean_diff = r8.as_raw().iter().zip(r32.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
            / r8.as_raw().len() as f64;
        let (e8, e32) = (rec.embedder().embed(&r8).unwrap(), rec.embedder().embed(&r32).unwrap());
        eprintln!(
            "{size} px: int8 vs fp32 mean |diff| {mean_diff:.2} levels, embedding cosine {:.4}; \
             cosine to the full face: fp32 {:.3}, int8 {:.3} (face {:.0} px)",
            cos(&e8, &e32),
            cos(&e32, &full),
            cos(&e8, &full),
            obs.aligned_px
        );
        // Quantisation must not change what the restorer does.
        assert!(mean_diff < 3.0, "{size} px: int8 and fp32 outputs differ by {mean_diff:.2} levels on average");
        assert!(cos(&e8, &e32) > 0.97, "{size} px: int8 and fp32 restorations embed differently");
        if size == 28 {
            // At 28 px the face is still the same person after restoration.
            assert!(cos(&e32, &full) > 0.6 && cos(&e8, &full) > 0.6, "28 px restoration lost the identity");
        }
    }
}

#[test]
fn faces_below_the_threshold_get_the_configured_restorer_larger_ones_the_fallback() {
    let mut config = Config::default();
    config.restore.method = RestoreKind::FtlganFp32;
    config.restore.below_px = 32.0;
    config.restore.fallback = RestoreKind::Bicubic;
    // The restore policy alone: the small-face path would take the 20 px face.
    config.embed.small_face_embedder = farsight::embed::EmbedderKind::Sface;
    let rec = farsight::Recognizer::load(&config).unwrap();
    let img = images::load(&lfw_image("Tony_Blair", 3), &Default::default()).unwrap();
    let full = rec.single_face(&img, true).unwrap().expect("a face");
    assert_eq!(full.restorer, None, "a {:.0} px face is never restored", full.aligned_px);
    let (w, h) = img.dimensions();
    for (face_px, want) in [(20.0, "ftlgan-fp32"), (56.0, "bicubic")] {
        let s = face_px / full.face.rect.w;
        let shrunk = image::imageops::resize(
            &img,
            (w as f32 * s) as u32,
            (h as f32 * s) as u32,
            image::imageops::FilterType::Triangle,
        );
        let obs = rec.single_face(&shrunk, true).unwrap().expect("a face in the shrunk photo");
        eprintln!("face box {:.1} px, aligned crop {:.1} px", obs.face.rect.w, obs.aligned_px);
        assert_eq!(obs.restorer.as_deref(), Some(want), "face of {:.0} aligned px", obs.aligned_px);
    }
}

/// Tony Blair's held-back photo shrunk so his face box is `face_px` wide, as a camera far away
/// would see it, saved as PNG in `dir`.
fn shrunk_tony_blair(dir: &std::path::Path, face_px: f32) -> std::path::PathBuf {
    let img = images::load(&lfw_image("Tony_Blair", 3), &Default::default()).unwrap();
    let full = recognizer().single_face(&img, true).unwrap().expect("a face");
    let s = face_px / full.face.rect.w;
    let (w, h) = img.dimensions();
    let small = image::imageops::resize(
        &img,
        (w as f32 * s) as u32,
        (h as f32 * s) as u32,
        image::imageops::FilterType::Triangle,
    );
    // On a grey canvas, so the detector sees a face in a scene, not a face filling the frame.
    let mut canvas = image::RgbImage::from_pixel(160, 160, image::Rgb([96, 96, 96]));
    image::imageops::replace(&mut canvas, &small, 40, 40);
    let path = dir.join(format!("tony_blair_{face_px}px.png"));
    canvas.save(&path).unwrap();
    path
}

#[test]
fn identify_of_a_small_face_frame_uses_the_small_face_path_and_enroll_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let probe = shrunk_tony_blair(dir.path(), 16.0);
    let frame = images::load(&probe, &Default::default()).unwrap();
    // The library: the default config routes a face below embed.small_face_below_px to lrembed
    // (after bicubic), and a gallery template of the same face to SFace.
    let rec = recognizer();
    let obs = rec.observe(&frame).unwrap();
    let face = obs.first().expect("the detector finds the 16 px face");
    assert!(face.aligned_px < Config::default().embed.small_face_below_px, "{} aligned px", face.aligned_px);
    assert_eq!(face.embedder, farsight::embed::EmbedderKind::Lrembed, "{:.1} aligned px", face.aligned_px);
    assert_eq!(face.restorer.as_deref(), Some("bicubic"), "lrembed takes the bicubic face");
    let template = rec.single_face_template(&frame, true).unwrap().expect("a face");
    assert_eq!(template.embedder, farsight::embed::EmbedderKind::Sface, "templates are always SFace");
    // A full-resolution face is never on the small-face path.
    let img = images::load(&lfw_image("Tony_Blair", 3), &Default::default()).unwrap();
    let full = rec.single_face(&img, true).unwrap().expect("a face");
    assert_eq!(full.embedder, farsight::embed::EmbedderKind::Sface);

    // The command: identify says which embedder made the probe, and matches it against the SFace
    // templates of the enrolled photos.
    let g = dir.path().join("gallery.db");
    enroll_tony_blair(&g);
    let out = farsight(&["identify", "--gallery", g.to_str().unwrap(), probe.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("{text}");
    assert!(text.contains("small-face embedder lrembed"), "{text}");
    assert!(text.contains("Tony Blair"), "the enrolled identity is a candidate: {text}");
}
