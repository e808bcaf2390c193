//! `farsight eval-fusion` end to end on a few pairs of the LFW training folds: every (mode,
//! subset, track length, method) row is there with its keys, a one-frame track scores the same
//! by every method, and tracks of one repeated frame fuse to exactly that frame.

use crate::common::{datasets, farsight, stderr};
use serde_json::Value;

fn run(dir: &std::path::Path, photos: &str) -> Value {
    let d = datasets();
    let json = dir.join(format!("fusion-{photos}.json"));
    let out = farsight(&[
        "eval-fusion",
        "--dataset",
        d.join("lfw").to_str().unwrap(),
        "--pairs",
        d.join("lfw-pairs.txt").to_str().unwrap(),
        "--folds",
        "1-2",
        "--max-pairs-per-fold",
        "6",
        "--frames",
        "3",
        "--quality-powers",
        "2",
        "--photos",
        photos,
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.starts_with("frame") && l.contains("tracker")), "{table}");
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

const METHODS: [&str; 6] = ["single", "best-frame", "tracker", "mean", "quality^2", "tracker-drop-outlier"];

fn row<'a>(rows: &'a [Value], mode: &str, subset: &str, frames: u64, method: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["mode"] == mode && r["subset"] == subset && r["frames"] == frames && r["method"] == method)
        .unwrap_or_else(|| panic!("no row {mode} {subset} {frames} {method}"))
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-5,
        _ => a == b,
    }
}

#[test]
fn eval_fusion_reports_every_method_at_every_track_length() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(dir.path(), "different");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 3 * METHODS.len(), "2 modes x 2 subsets x 3 lengths x methods");
    assert_eq!(report["size"], 14);
    assert_eq!(report["best_shots"], 5, "the default config's track.best_shots");
    let lengths: Vec<u64> = report["track_lengths"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(lengths.len(), 3);
    assert_eq!(lengths.iter().sum::<u64>(), 24, "2 folds x (6 genuine + 6 impostor), none skipped");
    assert!(lengths[2] > 0, "some probe identities have three photos: {lengths:?}");
    for r in rows {
        for key in ["method", "frames", "subset", "mean_frames", "d_prime", "accuracy", "tar_at_far_1e-3", "pairs"] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        assert_eq!(r["restore"], "shipped");
        let want = if r["subset"] == "all" { 24 } else { lengths[2] };
        assert_eq!(r["pairs"], want, "{r}");
    }
    for mode in ["crop", "frame"] {
        // One frame: every method is the pair's own frame.
        let single = row(rows, mode, "all", 1, "single");
        for m in METHODS {
            let r = row(rows, mode, "all", 1, m);
            for key in ["d_prime", "genuine_mean", "impostor_mean", "accuracy"] {
                assert!(close(&r[key], &single[key]), "{mode} {m} {key}: {} vs {}", r[key], single[key]);
            }
        }
        // The pair's own frame does not change with the track's length; longer tracks use more.
        let mut last = 0.0;
        for n in 1..=3 {
            assert!(close(&row(rows, mode, "all", n, "single")["genuine_mean"], &single["genuine_mean"]));
            let used = row(rows, mode, "all", n, "tracker")["mean_frames"].as_f64().unwrap();
            assert!(used >= last, "{mode}: mean frames {used} after {last}");
            last = used;
            // A full track of n frames fuses the n frames less the detector's misses (all n when
            // it missed every one).
            let full = row(rows, mode, "full", n, "tracker");
            let (pairs, mean) = (full["pairs"].as_f64().unwrap(), full["mean_frames"].as_f64().unwrap());
            let missed = full["detector_misses"].as_f64().unwrap();
            assert!(mean <= n as f64 && mean * pairs + missed >= n as f64 * pairs - 1e-6, "{full}");
            assert_eq!(full["probe_images"].as_f64().unwrap(), n as f64 * pairs);
        }
        assert!(last > 1.0, "{mode}: tracks of several frames");
    }
}

#[test]
fn eval_fusion_of_a_repeated_frame_is_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(dir.path(), "repeat");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(report["track_lengths"], serde_json::json!([0, 0, 24]), "every track has K copies");
    for mode in ["crop", "frame"] {
        let single = row(rows, mode, "all", 1, "single");
        for n in 1..=3 {
            for m in METHODS {
                let r = row(rows, mode, "all", n, m);
                for key in ["d_prime", "genuine_mean", "impostor_mean", "tar_at_far_1e-3"] {
                    assert!(close(&r[key], &single[key]), "{mode} {n} {m} {key}: {} vs {}", r[key], single[key]);
                }
            }
        }
    }
}
