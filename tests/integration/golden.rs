//! Model round-trips against golden tensors made by onnxruntime (`models/golden.py`): tract must
//! compute what the reference runtime computes on the committed model files.

use crate::common::{lfw_image, recognizer};
use farsight::model::{sha256_hex, ModelFile};
use std::path::Path;

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn model(name: &str) -> ModelFile {
    ModelFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// NCHW float tensor of an RGB crop.
fn nchw(img: &image::RgbImage, h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    let mut x = vec![0f32; 3 * plane];
    for (px, py, p) in img.enumerate_pixels() {
        for c in 0..3 {
            x[c * plane + py as usize * w + px as usize] = p.0[c] as f32;
        }
    }
    x
}

#[test]
fn sface_in_tract_matches_onnxruntime() {
    let g = golden("sface_aaron_eckhart_0001_crop69.json");
    let file = model("sface.onnx");
    assert_eq!(file.sha256(), g["model_sha256"].as_str().unwrap(), "golden made from another model file");
    let theirs = floats(&g["embedding"]);
    let (exact_plan, plan) = (file.plan_exact(&[1, 3, 112, 112]).unwrap(), file.plan(&[1, 3, 112, 112]).unwrap());
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let compare = |plan: &farsight::model::Plan, crop: &image::RgbImage| {
        let ours = plan.run(nchw(crop, 112, 112)).unwrap().remove(0).data;
        let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let cos = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum::<f32>() / (norm(&ours) * norm(&theirs));
        (max_diff, cos)
    };
    // 1. The exact pixels onnxruntime saw (lossless PNG): only float summation order differs.
    //    Raw outputs have norm ~10; tolerance 1e-3 absolute.
    let exact = image::open(golden_dir().join("sface_aaron_eckhart_0001_crop69.png")).unwrap().into_rgb8();
    assert_eq!(
        sha256_hex(exact.as_raw()),
        g["input_u8_sha256"].as_str().unwrap(),
        "golden PNG is not the golden input"
    );
    let (max_diff, cos) = compare(&exact_plan, &exact);
    eprintln!("sface (f32 plan) on identical pixels: max |diff| {max_diff:.2e}, cosine {cos:.7}");
    assert!(max_diff < 1e-3, "max |diff| {max_diff}");
    // 1b. The shipped plan keeps the last layer's 6.4 M weights as int8 rows (model/gemv.rs):
    //     the direction must hold to 1e-4 (measured 0.99998 or better on 300 LFW crops).
    let (max_diff, cos) = compare(&plan, &exact);
    eprintln!("sface (shipped plan, int8 last layer) on identical pixels: max |diff| {max_diff:.2e}, cosine {cos:.7}");
    assert!(cos > 0.9999, "cosine {cos} with the int8 last layer");
    // 2. The same crop through our own JPEG decoder (zune-jpeg vs libjpeg-turbo: pixels may differ
    //    by a step): the embedding direction must hold.
    let img = image::open(lfw_image("Aaron_Eckhart", 1)).unwrap().into_rgb8();
    let crop = image::imageops::crop_imm(&img, 69, 69, 112, 112).to_image();
    let (_, cos) = compare(&plan, &crop);
    assert!(cos > 0.999, "cosine {cos} after our JPEG decode");
}

#[test]
fn centerface_in_tract_matches_onnxruntime_and_the_detector_decodes_its_box() {
    let g = golden("centerface_aaron_eckhart_0001.json");
    let file = model("centerface.onnx");
    assert_eq!(file.sha256(), g["model_sha256"].as_str().unwrap());
    let img = image::open(lfw_image("Aaron_Eckhart", 1)).unwrap().into_rgb8();
    let mut padded = image::RgbImage::new(256, 256);
    image::imageops::replace(&mut padded, &img, 0, 0);
    let out = file.plan(&[1, 3, 256, 256]).unwrap().run(nchw(&padded, 256, 256)).unwrap();
    let heat = &out[0];
    assert_eq!(heat.shape, vec![1, 1, 64, 64]);
    let (argmax, max) = heat.data.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let want = g["heatmap_max"].as_f64().unwrap() as f32;
    assert!((max - want).abs() < 5e-3, "heatmap max {max} vs {want}");
    let yx = g["heatmap_argmax_yx"].as_array().unwrap();
    assert_eq!([argmax / 64, argmax % 64], [yx[0].as_u64().unwrap() as usize, yx[1].as_u64().unwrap() as usize]);

    // The full detector (centred padding, decoding, NMS, inverse letterbox) finds the same face.
    let faces = recognizer().detector().unwrap().detect(&img).unwrap();
    let b = floats(&g["box_x1y1x2y2_at_max"]);
    let best = faces.first().expect("a face");
    let ours = [best.rect.x, best.rect.y, best.rect.x + best.rect.w, best.rect.y + best.rect.h];
    for (o, t) in ours.iter().zip(&b) {
        assert!((o - t).abs() < 4.0, "box {ours:?} vs golden {b:?}");
    }
    let lm = floats(&g["landmarks_xy_at_max"]);
    for (i, p) in best.landmarks.iter().enumerate() {
        assert!((p.x - lm[2 * i]).abs() < 4.0 && (p.y - lm[2 * i + 1]).abs() < 4.0, "landmark {i}: {p:?}");
    }
}

#[test]
fn retinaface_finds_the_same_face_and_landmarks_as_centerface() {
    use farsight::detect::{DetectorConfig, DetectorKind};
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let retina = farsight::detect::Detector::load(
        &models,
        DetectorConfig { kind: DetectorKind::Retinaface, ..Default::default() },
    )
    .unwrap();
    for (name, n) in [("Aaron_Eckhart", 1), ("Tony_Blair", 1), ("Serena_Williams", 1)] {
        let img = image::open(lfw_image(name, n)).unwrap().into_rgb8();
        let r = retina.detect(&img).unwrap();
        let c = recognizer().detector().unwrap().detect(&img).unwrap();
        let (r, c) = (r.first().expect("retinaface finds the face"), c.first().expect("centerface finds the face"));
        // The two models draw boxes differently (CenterFace's are taller), but the landmarks are
        // the same five points of the same face, up to each model's idea of the nose tip: within
        // 10% of the face width (a decoding bug moves points by tens of pixels).
        for (i, (p, q)) in r.landmarks.iter().zip(&c.landmarks).enumerate() {
            let d = ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt();
            assert!(d < 0.1 * c.rect.w, "{name}: landmark {i} differs by {d:.1} px: {p:?} vs {q:?}");
        }
        assert!(r.rect.iou(&c.rect) > 0.5, "{name}: boxes {:?} vs {:?}", r.rect, c.rect);
    }
}

/// The FTLGAN restorers: a real LFW face aligned by farsight (`export-aligned`), box-downsampled to
/// 14 px and bicubic-upscaled by PIL (the exact input is the committed PNG), run through each
/// committed model in tract, must match onnxruntime's output to max |diff| 1e-4 (float
/// reassociation only): the int8 file is weight-only QDQ, and both runtimes dequantise its int8
/// weights to the same floats (no activation is requantised). Then the whole restorer (farsight's
/// own downsample and Catmull-Rom, then the model) on the same aligned face must land within
/// 3/255 mean of the golden output.
#[test]
fn ftlgan_restorers_in_tract_match_onnxruntime() {
    let g = golden("ftlgan_abdullah_gul_0001_14px.json");
    let input_png = image::open(golden_dir().join("ftlgan_abdullah_gul_0001_14px_bicubic.png")).unwrap().into_rgb8();
    let input: Vec<f32> = nchw(&input_png, 112, 112).into_iter().map(|v| v / 255.0).collect();
    let aligned = image::open(golden_dir().join("ftlgan_abdullah_gul_0001_aligned.png")).unwrap().into_rgb8();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for (file, kind, max_tol, mean_tol) in [
        ("ftlgan-fp32.onnx", farsight::restore::RestoreKind::FtlganFp32, 1e-4, 1e-5),
        ("ftlgan.onnx", farsight::restore::RestoreKind::Ftlgan, 1e-4, 1e-5),
    ] {
        let meta = &g[file];
        let m = model(file);
        assert_eq!(m.sha256(), meta["sha256"].as_str().unwrap(), "{file} changed: re-run models/golden.py");
        let bytes = std::fs::read(golden_dir().join(meta["output"].as_str().unwrap())).unwrap();
        let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(want.len(), 3 * 112 * 112);
        let got = m.plan(&[1, 3, 112, 112]).unwrap().run(input.clone()).unwrap().remove(0);
        assert_eq!(got.shape, [1, 3, 112, 112]);
        let diffs: Vec<f32> = got.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().cloned().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("{file}: tract vs onnxruntime max |diff| {max:.2e}, mean {mean:.2e}");
        assert!(max <= max_tol && mean <= mean_tol, "{file}: max {max}, mean {mean}");

        let restorer = farsight::restore::build(kind, &models).unwrap();
        let restored = restorer.restore(&farsight::align::downsample(&aligned, 14)).unwrap();
        let want = &want;
        let whole: f32 = restored
            .enumerate_pixels()
            .flat_map(|(x, y, p)| {
                let i = (y * 112 + x) as usize;
                (0..3).map(move |c| (p.0[c] as f32 / 255.0 - want[c * 112 * 112 + i]).abs())
            })
            .sum::<f32>()
            / want.len() as f32;
        eprintln!("{file}: whole restorer vs golden mean |diff| {:.2}/255", whole * 255.0);
        assert!(whole <= 3.0 / 255.0, "{file}: the restorer's own pre-processing drifted: {}", whole * 255.0);
    }
}

/// YuNet (`models/golden.py yunet`): the Aaron photo zero-padded bottom/right to 256x256, BGR
/// 0..255. (1) tract's 12 raw outputs against onnxruntime's: max |diff| 2e-3 when our JPEG decode
/// gives Pillow's pixels, else 0.1 (scores are sigmoids in 0..1, box/landmark offsets are in
/// stride units, so 0.1 is under a pixel at stride 8); (2) the full detector (centred padding,
/// decoding, NMS, inverse letterbox) finds the golden face: score within 0.02, box corners and
/// landmarks within 8% of the face width. That is loose on purpose: the face scores 0.921 at
/// stride 8 and 0.916 at stride 32, whose boxes differ by 4 px and landmarks by up to 6 px, and
/// the 3 px centring shift (plus JPEG decoders) decides which wins NMS. The decoding itself is
/// checked exactly on the golden raw outputs by the unit test in `src/detect.rs`.
#[test]
fn yunet_in_tract_matches_onnxruntime_and_the_detector_decodes_its_face() {
    use farsight::detect::{DetectorConfig, DetectorKind};
    let g = golden("yunet_aaron_eckhart_0001.json");
    let file = model("yunet.onnx");
    assert_eq!(file.sha256(), g["model_sha256"].as_str().unwrap(), "yunet.onnx changed: re-run models/golden.py yunet");
    let img = image::open(lfw_image("Aaron_Eckhart", 1)).unwrap().into_rgb8();
    let same_pixels = sha256_hex(img.as_raw()) == g["input_u8_sha256"].as_str().unwrap();
    let mut padded = image::RgbImage::new(256, 256);
    image::imageops::replace(&mut padded, &img, 0, 0);
    for p in padded.pixels_mut() {
        p.0.reverse(); // BGR
    }
    let out = file.plan(&[1, 3, 256, 256]).unwrap().run(nchw(&padded, 256, 256)).unwrap();
    let shapes: Vec<Vec<usize>> = out.iter().map(|o| o.shape.clone()).collect();
    let want_shapes: Vec<Vec<usize>> = g["output_shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect())
        .collect();
    assert_eq!(shapes, want_shapes, "output order or layout changed");
    let bytes = std::fs::read(golden_dir().join("yunet_aaron_eckhart_0001.bin")).unwrap();
    let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let got: Vec<f32> = out.into_iter().flat_map(|o| o.data).collect();
    assert_eq!(got.len(), want.len());
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("yunet raw outputs: max |diff| {max_diff:.2e} (same input pixels: {same_pixels})");
    assert!(max_diff < if same_pixels { 2e-3 } else { 0.1 }, "max |diff| {max_diff}");

    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let det =
        farsight::detect::Detector::load(&models, DetectorConfig { kind: DetectorKind::Yunet, ..Default::default() })
            .unwrap();
    let faces = det.detect(&img).unwrap();
    let best = faces.first().expect("yunet finds the face");
    let gb = &g["best"];
    let score = gb["score"].as_f64().unwrap() as f32;
    assert!((best.score - score).abs() < 0.02, "score {} vs {score}", best.score);
    let b = floats(&gb["box_x1y1x2y2"]);
    let tol = 0.08 * (b[2] - b[0]);
    let ours = [best.rect.x, best.rect.y, best.rect.x + best.rect.w, best.rect.y + best.rect.h];
    for (o, t) in ours.iter().zip(&b) {
        assert!((o - t).abs() < tol, "box {ours:?} vs golden {b:?}");
    }
    let lm = floats(&gb["landmarks_xy"]);
    for (i, p) in best.landmarks.iter().enumerate() {
        assert!((p.x - lm[2 * i]).abs() < tol && (p.y - lm[2 * i + 1]).abs() < tol, "landmark {i}: {p:?}");
    }
}

/// YuNet against CenterFace (the default, whose landmarks `align.rs` was built on) on LFW photos:
/// the same face (box IoU > 0.5) and the same five points in the same order, each within 10% of
/// the face width (swapped eyes or mouth corners would be off by a third of the face).
#[test]
fn yunet_finds_the_same_face_and_landmarks_as_centerface() {
    use farsight::detect::{DetectorConfig, DetectorKind};
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let yunet =
        farsight::detect::Detector::load(&models, DetectorConfig { kind: DetectorKind::Yunet, ..Default::default() })
            .unwrap();
    for (name, n) in [("Aaron_Eckhart", 1), ("Tony_Blair", 1), ("Serena_Williams", 1), ("George_W_Bush", 2)] {
        let img = image::open(lfw_image(name, n)).unwrap().into_rgb8();
        let y = yunet.detect(&img).unwrap();
        let c = recognizer().detector().unwrap().detect(&img).unwrap();
        let (y, c) = (y.first().expect("yunet finds the face"), c.first().expect("centerface finds the face"));
        let mut worst = 0f32;
        for (i, (p, q)) in y.landmarks.iter().zip(&c.landmarks).enumerate() {
            let d = ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt();
            worst = worst.max(d / c.rect.w);
            assert!(d < 0.1 * c.rect.w, "{name}: landmark {i} differs by {d:.1} px: {p:?} vs {q:?}");
        }
        let iou = y.rect.iou(&c.rect);
        eprintln!(
            "{name}: yunet vs centerface box IoU {iou:.2}, worst landmark {:.1}% of the face width",
            100.0 * worst
        );
        assert!(iou > 0.5, "{name}: boxes {:?} vs {:?}", y.rect, c.rect);
    }
}

/// The small-face embedder: onnxruntime's raw embedding of the committed 14 px bicubic face (the
/// ftlgan golden's input, exactly lrembed's contract) against tract's, on identical pixels: max
/// |diff| below 1e-3 on outputs of norm ~10 (SFace's tolerance: only float summation order and
/// farsight's PRelu rewrite differ) with every weight f32 (`plan_exact`); the shipped plan, whose
/// last layer is int8 rows, to a cosine of 0.9999. Then farsight's own path (its downsample and Catmull-Rom of
/// the aligned face, then `Embedder`) must keep the direction (cosine > 0.999) and land nearer
/// SFace's full-resolution embedding than SFace on the same bicubic face does.
#[test]
fn lrembed_in_tract_matches_onnxruntime() {
    use farsight::embed::{cosine, normalize, Embedder, EmbedderKind};
    let g = golden("lrembed_abdullah_gul_0001_14px.json");
    let file = model("lrembed.onnx");
    assert_eq!(file.sha256(), g["model_sha256"].as_str().unwrap(), "lrembed.onnx changed: re-run models/golden.py");
    let input = image::open(golden_dir().join("ftlgan_abdullah_gul_0001_14px_bicubic.png")).unwrap().into_rgb8();
    assert_eq!(sha256_hex(input.as_raw()), g["input_u8_sha256"].as_str().unwrap(), "golden PNG is not the input");
    let theirs = floats(&g["embedding"]);
    let ours = file.plan_exact(&[1, 3, 112, 112]).unwrap().run(nchw(&input, 112, 112)).unwrap().remove(0);
    assert_eq!(ours.shape, [1, 128]);
    let max_diff = ours.data.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let (a, b) = (normalize(ours.data.clone()).unwrap(), normalize(theirs.clone()).unwrap());
    eprintln!("lrembed (f32 plan) on identical pixels: max |diff| {max_diff:.2e}, cosine {:.7}", cosine(&a, &b));
    assert!(max_diff < 1e-3, "max |diff| {max_diff}");
    // The shipped plan (int8 last layer, model/gemv.rs) keeps the direction to 1e-4.
    let shipped = file.plan(&[1, 3, 112, 112]).unwrap().run(nchw(&input, 112, 112)).unwrap().remove(0);
    let c = cosine(&normalize(shipped.data).unwrap(), &b);
    eprintln!("lrembed (shipped plan, int8 last layer) on identical pixels: cosine {c:.7}");
    assert!(c > 0.9999, "cosine {c} with the int8 last layer");

    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let aligned = image::open(golden_dir().join("ftlgan_abdullah_gul_0001_aligned.png")).unwrap().into_rgb8();
    let up = farsight::restore::build(farsight::restore::RestoreKind::Bicubic, &models)
        .unwrap()
        .restore(&farsight::align::downsample(&aligned, 14))
        .unwrap();
    let lrembed = Embedder::load_kind(&models, EmbedderKind::Lrembed).unwrap();
    let ours = lrembed.embed(&up).unwrap();
    let c = cosine(&ours, &b);
    eprintln!("lrembed through farsight's downsample + Catmull-Rom: cosine {c:.5} to the golden");
    assert!(c > 0.999, "cosine {c}: farsight's small-face pre-processing drifted from the contract");
    let full = normalize(floats(&g["sface_full_resolution"])).unwrap();
    let sface_small = Embedder::load(&models).unwrap().embed(&up).unwrap();
    let (student, teacher) = (cosine(&ours, &full), cosine(&sface_small, &full));
    eprintln!("cosine to SFace at full resolution: lrembed {student:.3}, SFace on the same 14 px face {teacher:.3}");
    assert!(student > teacher, "lrembed {student} does not land nearer the full-resolution face than SFace {teacher}");
}
