//! `farsight eval` end to end on a small slice of the LFW training folds: every row is present
//! with its published keys, full-resolution accuracy is high, and the ROC PNG is a real image.

use crate::common::{datasets, farsight, stderr};

#[test]
fn eval_writes_the_json_table_and_the_roc_png() {
    let d = datasets();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let png = dir.path().join("roc.png");
    let out = farsight(&[
        "eval",
        "--dataset",
        d.join("lfw").to_str().unwrap(),
        "--pairs",
        d.join("lfw-pairs.txt").to_str().unwrap(),
        "--folds",
        "1-2",
        "--max-pairs-per-fold",
        "15",
        "--sizes",
        "14,112",
        "--restore",
        "none,bicubic",
        "--mode",
        "crop,frame",
        "--json",
        json.to_str().unwrap(),
        "--roc",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "2 modes x 2 sizes x 2 restorers");
    for r in rows {
        for key in
            ["mode", "size", "restore", "d_prime", "auc", "accuracy", "tar_at_far_1e-3", "pairs", "detector_misses"]
        {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        assert_eq!(r["pairs"], 60);
    }
    let row = |mode: &str, size: u64, restore: &str| {
        rows.iter().find(|r| r["mode"] == mode && r["size"] == size && r["restore"] == restore).unwrap()
    };
    let full = row("crop", 112, "none");
    assert!(full["accuracy"].as_f64().unwrap() >= 0.9, "{full}");
    assert!(full["auc"].as_f64().unwrap() >= 0.95, "{full}");
    // 14 px loses identity information: a lower d' than at full resolution.
    assert!(row("crop", 14, "bicubic")["d_prime"].as_f64().unwrap() < full["d_prime"].as_f64().unwrap());
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1200, 900));
}

#[test]
fn eval_reports_the_ftlgan_restorers_under_their_names() {
    let d = datasets();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let args = |restore: &'static str, json: &str| {
        farsight(&[
            "eval",
            "--dataset",
            d.join("lfw").to_str().unwrap(),
            "--pairs",
            d.join("lfw-pairs.txt").to_str().unwrap(),
            "--folds",
            "1",
            "--max-pairs-per-fold",
            "5",
            "--sizes",
            "14",
            "--restore",
            restore,
            "--threads",
            "2",
            "--json",
            json,
        ])
    };
    let out = args("bicubic,ftlgan,ftlgan-fp32", json.to_str().unwrap());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = report["rows"].as_array().unwrap().iter().map(|r| r["restore"].as_str().unwrap()).collect();
    assert_eq!(names, ["bicubic", "ftlgan", "ftlgan-fp32"]);
    let files: Vec<&str> = report["restorers"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(files[0], "bicubic");
    assert!(files[1].starts_with("ftlgan (sha256 ") && files[2].starts_with("ftlgan-fp32 (sha256 "), "{files:?}");
    for r in report["rows"].as_array().unwrap() {
        assert_eq!(r["pairs"], 10, "{r}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    for name in ["ftlgan ", "ftlgan-fp32 "] {
        assert!(table.lines().any(|l| l.starts_with("crop") && l.contains(name)), "no {name:?} row: {table}");
    }
    // An unknown restorer is a usage error that lists the known ones.
    let out = args("ftlgan-int4", json.to_str().unwrap());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ftlgan-fp32"), "{}", stderr(&out));
}

#[test]
fn eval_crosses_embedders_and_shipped_follows_the_config_small_face_path() {
    let d = datasets();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let out = farsight(&[
        "eval",
        "--dataset",
        d.join("lfw").to_str().unwrap(),
        "--pairs",
        d.join("lfw-pairs.txt").to_str().unwrap(),
        "--folds",
        "1-2",
        "--max-pairs-per-fold",
        "8",
        "--sizes",
        "14,56",
        "--restore",
        "bicubic,shipped",
        "--embedder",
        "sface,lrembed",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "2 sizes x (bicubic x 2 embedders + shipped)");
    let row = |size: u64, restore: &str, embedder: &str| {
        rows.iter()
            .find(|r| r["size"] == size && r["restore"] == restore && r["embedder"] == embedder)
            .unwrap_or_else(|| panic!("no row {size} {restore} {embedder}"))
    };
    // Default config: 14 aligned px is below small_face_below_px (28), so `shipped` is lrembed on
    // the bicubic face for every probe; 56 px is ftlgan-free bicubic + SFace.
    let (shipped14, lrembed14) = (row(14, "shipped", "shipped"), row(14, "bicubic", "lrembed"));
    assert_eq!(shipped14["d_prime"], lrembed14["d_prime"]);
    assert_eq!(shipped14["small_face_probes"], shipped14["probe_images"]);
    let shipped56 = row(56, "shipped", "shipped");
    assert_eq!(shipped56["small_face_probes"], 0);
    assert_eq!(shipped56["d_prime"], row(56, "bicubic", "sface")["d_prime"]);
    for r in rows {
        assert!(r["threshold_at_far_1e-3"].is_number() && r["threshold_best_accuracy"].is_number(), "{r}");
    }
    assert!(report["small_face_path"].as_str().unwrap().starts_with("lrembed below 28"), "{report}");
}

#[test]
fn a_probe_size_of_zero_is_refused_not_a_panic() {
    let d = datasets();
    let (lfw, pairs) = (d.join("lfw"), d.join("lfw-pairs.txt"));
    for args in [
        vec!["eval", "--sizes", "14,0"],
        vec!["eval", "--sizes", "113"],
        vec!["eval-fusion", "--size", "0"],
        vec!["eval-visitors", "--sizes", "0"],
    ] {
        let mut args = args.clone();
        args.extend(["--dataset", lfw.to_str().unwrap(), "--pairs", pairs.to_str().unwrap()]);
        let out = farsight(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not in 2..=112") && !err.contains("panicked"), "{args:?}: {err}");
    }
}
