//! `farsight export-aligned` writes farsight-aligned training faces and never an identity of the
//! evaluation folds.

use crate::common::{datasets, farsight, lfw_image, stderr};

#[test]
fn export_writes_aligned_faces_and_skips_evaluation_identities() {
    // A small dataset in the LFW layout from real photos: Tony_Blair is in fold 2 (training),
    // Aaron_Eckhart in fold 8 (evaluation).
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("lfw");
    for (name, n) in [("Tony_Blair", 1), ("Tony_Blair", 2), ("Aaron_Eckhart", 1)] {
        std::fs::create_dir_all(ds.join(name)).unwrap();
        std::fs::copy(lfw_image(name, n), ds.join(name).join(format!("{name}_{n:04}.jpg"))).unwrap();
    }
    let out = dir.path().join("aligned");
    let pairs = datasets().join("lfw-pairs.txt");
    let run = farsight(&[
        "export-aligned",
        "--dataset",
        ds.to_str().unwrap(),
        "--pairs",
        pairs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!out.join("Aaron_Eckhart").exists(), "an evaluation-fold identity was exported");
    for n in [1, 2] {
        let face = image::open(out.join("Tony_Blair").join(format!("Tony_Blair_{n:04}.png"))).unwrap();
        assert_eq!((face.width(), face.height()), (112, 112));
    }
    let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 3, "header + 2 faces: {manifest}");
    assert!(stderr(&run).contains("1 identities of folds 6-10 excluded"), "{}", stderr(&run));
}
