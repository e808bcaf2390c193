//! Face detection: letterboxes a frame into the detector's input, runs the model, decodes boxes and
//! the five landmarks back into frame coordinates, and suppresses overlaps (NaN-safe NMS).
//! Three detectors ship (see `models/MODELS.md`, "Detector notes"): CenterFace (the default
//! photo detector, `[detector] kind`: best landmarks for aligning full-size faces),
//! RetinaFace-MobileNet0.25 (about 3x faster, misses the smallest faces unless magnified) and
//! YuNet (OpenCV zoo 2023mar, 7x fewer multiply-adds than CenterFace; the default streaming region
//! detector, `[scene] detector`: as good on magnified 12-16 px faces at a quarter of the CPU).
//! All three give the five landmarks in the same order (the subject's right eye, left eye, nose,
//! right and left mouth corners: image-left first), the order `align.rs` expects.

use crate::geometry::{Landmarks, Letterbox, Point, Rect};
use crate::model::{ModelError, ModelFile, Plan};
use image::{GenericImageView, Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Which detector model to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// CenterFace (`models/centerface.onnx`): RGB 0..255, outputs at 1/4 resolution.
    Centerface,
    /// RetinaFace-MobileNet0.25 (`models/retinaface-mnet025.onnx`): BGR minus mean, prior boxes.
    Retinaface,
    /// YuNet 2023mar (`models/yunet.onnx`): BGR 0..255, anchor-free heads at strides 8/16/32.
    Yunet,
}

impl DetectorKind {
    pub fn file_name(self) -> &'static str {
        match self {
            DetectorKind::Centerface => "centerface.onnx",
            DetectorKind::Retinaface => "retinaface-mnet025.onnx",
            DetectorKind::Yunet => "yunet.onnx",
        }
    }
}

/// Detector settings; see `config.rs` for the defaults and their reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    /// Minimum detector confidence for a face.
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_iou: f32,
    /// Frames are shrunk so their longer side is at most this many pixels before detection.
    pub max_side: u32,
    /// Extra magnification applied before detection (2.0 helps RetinaFace find 12-16 px faces).
    pub upscale: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { kind: DetectorKind::Centerface, score_threshold: 0.5, nms_iou: 0.3, max_side: 1280, upscale: 1.0 }
    }
}

/// A detected face in frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Face {
    #[serde(rename = "box")]
    pub rect: Rect,
    pub score: f32,
    pub landmarks: Landmarks,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("detector model {path}: unexpected output layout: {what}")]
    Layout { path: String, what: String },
    #[error("frame of {0}x{1} pixels is empty")]
    EmptyFrame(u32, u32),
}

/// A loaded detector. Plans are made per input size on first use and cached; share it behind an
/// `Arc` between threads.
pub struct Detector {
    config: DetectorConfig,
    file: ModelFile,
    plans: Mutex<Plans>,
}

/// The detector's plans (tract optimises one per input size; each holds its own packed copy of
/// the weights, ~9 MiB for CenterFace). Tiles (`detect_region`) are a bounded set by
/// construction (`scene::TILES`) and all kept; photo sizes (`detect`) are whatever callers send
/// (HTTP uploads, image folders), so only the [`PHOTO_PLANS`] most recently used are kept: one
/// plan per size ever seen grew `identify` of ten photo sizes from 185 to 275 MiB, and a daemon
/// without bound.
#[derive(Default)]
struct Plans {
    tiles: HashMap<(u32, u32), Plan>,
    /// Most recently used first.
    photos: Vec<((u32, u32), Plan)>,
}

const PHOTO_PLANS: usize = 3;

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("config", &self.config).field("file", &self.file).finish()
    }
}

const STRIDE: u32 = 32;

impl Detector {
    /// Loads the configured detector from `models_dir` and checks it on a 640x480 input, so a
    /// wrong or corrupt file fails here, at start, not on the first frame.
    pub fn load(models_dir: &Path, config: DetectorConfig) -> Result<Self, DetectError> {
        let file = ModelFile::load(&models_dir.join(config.kind.file_name()))?;
        let det = Self { config, file, plans: Mutex::new(Plans::default()) };
        let probe = RgbImage::new(640, 480);
        det.detect(&probe)?;
        Ok(det)
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// sha256 of the detector's model file.
    pub fn sha256(&self) -> &str {
        self.file.sha256()
    }

    /// The model input size used for a frame of `w` x `h`: the frame scaled by
    /// `upscale * min(1, max_side / longer side)`, rounded up to a multiple of 32.
    pub fn input_size(&self, w: u32, h: u32) -> (u32, u32) {
        let s = self.scale_for(w, h);
        let up = |v: u32| (((v as f32 * s).round() as u32).max(1)).div_ceil(STRIDE) * STRIDE;
        (up(w), up(h))
    }

    fn scale_for(&self, w: u32, h: u32) -> f32 {
        let long = w.max(h).max(1) as f32;
        self.config.upscale * (self.config.max_side as f32 / long).min(1.0)
    }

    /// (tile plans, photo plans) held now.
    #[cfg(test)]
    fn plan_counts(&self) -> (usize, usize) {
        let plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (plans.tiles.len(), plans.photos.len())
    }

    /// The plan for a `w` x `h` input: a tile's (kept) or a photo's (the last few kept).
    fn plan_for(&self, w: u32, h: u32, photo: bool) -> Result<Plan, DetectError> {
        let mut plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (w, h);
        if !photo {
            if let Some(p) = plans.tiles.get(&key) {
                return Ok(p.clone());
            }
            let plan = self.file.plan(&[1, 3, h as usize, w as usize])?;
            plans.tiles.insert(key, plan.clone());
            return Ok(plan);
        }
        let plan = match plans.photos.iter().position(|(k, _)| *k == key) {
            Some(i) => plans.photos.remove(i).1,
            None => self.file.plan(&[1, 3, h as usize, w as usize])?,
        };
        plans.photos.insert(0, (key, plan.clone()));
        plans.photos.truncate(PHOTO_PLANS);
        Ok(plan)
    }

    /// Detects faces in `frame`, best first.
    pub fn detect(&self, frame: &RgbImage) -> Result<Vec<Face>, DetectError> {
        let (fw, fh) = frame.dimensions();
        if fw == 0 || fh == 0 {
            return Err(DetectError::EmptyFrame(fw, fh));
        }
        let (iw, ih) = self.input_size(fw, fh);
        // Scale exactly as planned and pad up to the stride multiple (no needless resampling).
        self.detect_scaled(frame, self.scale_for(fw, fh), iw, ih, true)
    }

    /// Detects faces inside `region` of `frame` (clamped to the frame), the region magnified by
    /// `scale` and placed in a `tile` = (width, height) input (multiples of 32; one plan per tile).
    /// Faces come back in frame coordinates. This is how the streaming pipeline looks at small
    /// regions at native resolution (or magnified), never shrinking a 16 px face to 5 px.
    pub fn detect_region(
        &self,
        frame: &RgbImage,
        region: Rect,
        scale: f32,
        tile: (u32, u32),
    ) -> Result<Vec<Face>, DetectError> {
        let (fw, fh) = frame.dimensions();
        let x0 = (region.x.max(0.0).floor() as u32).min(fw);
        let y0 = (region.y.max(0.0).floor() as u32).min(fh);
        let x1 = ((region.x + region.w).ceil().max(0.0) as u32).min(fw);
        let y1 = ((region.y + region.h).ceil().max(0.0) as u32).min(fh);
        if x1 <= x0 || y1 <= y0 {
            return Ok(Vec::new());
        }
        // A view, not a copy: a full scan's region is the whole frame (6.2 MB at 1080p).
        let crop = image::imageops::crop_imm(frame, x0, y0, x1 - x0, y1 - y0);
        let mut faces = self.detect_scaled(&*crop, scale, tile.0, tile.1, false)?;
        for f in &mut faces {
            f.rect.x += x0 as f32;
            f.rect.y += y0 as f32;
            for p in &mut f.landmarks {
                p.x += x0 as f32;
                p.y += y0 as f32;
            }
        }
        Ok(faces)
    }

    /// Runs the detector on `frame` scaled by `scale` and centred in an `iw` x `ih` input (a
    /// `photo` size, or a tile).
    fn detect_scaled<I: GenericImageView<Pixel = Rgb<u8>>>(
        &self,
        frame: &I,
        scale: f32,
        iw: u32,
        ih: u32,
        photo: bool,
    ) -> Result<Vec<Face>, DetectError> {
        let (fw, fh) = frame.dimensions();
        let lb = Letterbox::with_scale(fw, fh, scale, iw, ih);
        let plan = self.plan_for(iw, ih, photo)?;
        let input = self.preprocess(frame, &lb, iw, ih);
        let outputs = plan.run(input)?;
        let path = self.file.path().display().to_string();
        let mut faces = match self.config.kind {
            DetectorKind::Centerface => decode_centerface(&outputs, self.config.score_threshold, iw, ih),
            DetectorKind::Retinaface => decode_retinaface(&outputs, self.config.score_threshold, iw, ih),
            DetectorKind::Yunet => decode_yunet(&outputs, self.config.score_threshold, iw, ih),
        }
        .map_err(|what| DetectError::Layout { path, what })?;
        for f in &mut faces {
            f.rect = lb.rect_to_frame(f.rect);
            for p in &mut f.landmarks {
                *p = lb.to_frame(*p);
            }
        }
        Ok(nms(faces, self.config.nms_iou))
    }

    /// Letterboxes the frame into an NCHW f32 tensor with the detector's normalisation.
    fn preprocess<I: GenericImageView<Pixel = Rgb<u8>>>(
        &self,
        frame: &I,
        lb: &Letterbox,
        iw: u32,
        ih: u32,
    ) -> Vec<f32> {
        if (lb.inner_w, lb.inner_h) != frame.dimensions() {
            let scaled = image::imageops::resize(frame, lb.inner_w, lb.inner_h, image::imageops::FilterType::Triangle);
            return self.preprocess(&scaled, lb, iw, ih);
        }
        // CenterFace takes RGB 0..255; RetinaFace takes BGR minus the Caffe means (pads then sit at
        // 0); YuNet takes BGR 0..255 (OpenCV's `blobFromImage` of a BGR Mat, no mean, no scale).
        let (order, mean): ([usize; 3], [f32; 3]) = match self.config.kind {
            DetectorKind::Centerface => ([0, 1, 2], [0.0; 3]),
            DetectorKind::Retinaface => ([2, 1, 0], [104.0, 117.0, 123.0]),
            DetectorKind::Yunet => ([2, 1, 0], [0.0; 3]),
        };
        let plane = (iw * ih) as usize;
        let mut data = vec![0f32; 3 * plane];
        let (px, py) = (lb.pad_x as u32, lb.pad_y as u32);
        for (x, y, p) in frame.pixels() {
            let idx = ((y + py) * iw + (x + px)) as usize;
            for c in 0..3 {
                data[c * plane + idx] = p.0[order[c]] as f32 - mean[c];
            }
        }
        data
    }
}

/// Greedy non-maximum suppression, best score first. Faces with a NaN or infinite score are
/// dropped (a NaN must never panic a sort or survive as a detection).
pub fn nms(mut faces: Vec<Face>, iou: f32) -> Vec<Face> {
    faces.retain(|f| f.score.is_finite());
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::with_capacity(faces.len());
    for f in faces {
        if kept.iter().all(|k| k.rect.iou(&f.rect) <= iou) {
            kept.push(f);
        }
    }
    kept
}

fn expect_shape(o: &crate::model::Output, want: &[usize], name: &str) -> Result<(), String> {
    if o.shape != want {
        return Err(format!("{name} has shape {:?}, expected {want:?}", o.shape));
    }
    Ok(())
}

/// CenterFace outputs, all at 1/4 of the input: heatmap [1,1,h,w], scale [1,2,h,w] (log of
/// height/4, width/4), offset [1,2,h,w] (y, x), landmarks [1,10,h,w] ((y, x) per point, relative
/// to the box's top-left in units of the box size).
fn decode_centerface(outputs: &[crate::model::Output], thr: f32, iw: u32, ih: u32) -> Result<Vec<Face>, String> {
    let [heat, scale, offset, lms] = outputs else {
        return Err(format!("{} outputs, expected 4 (heatmap, scale, offset, landmarks)", outputs.len()));
    };
    let (h, w) = ((ih / 4) as usize, (iw / 4) as usize);
    expect_shape(heat, &[1, 1, h, w], "heatmap")?;
    expect_shape(scale, &[1, 2, h, w], "scale")?;
    expect_shape(offset, &[1, 2, h, w], "offset")?;
    expect_shape(lms, &[1, 10, h, w], "landmarks")?;
    let plane = h * w;
    let (iwf, ihf) = (iw as f32, ih as f32);
    let mut faces = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let score = heat.data[i];
            // `is_nan` first: a NaN score is never a face.
            if score.is_nan() || score <= thr {
                continue;
            }
            let bh = scale.data[i].exp() * 4.0;
            let bw = scale.data[plane + i].exp() * 4.0;
            let x1 = ((x as f32 + offset.data[plane + i] + 0.5) * 4.0 - bw / 2.0).clamp(0.0, iwf);
            let y1 = ((y as f32 + offset.data[i] + 0.5) * 4.0 - bh / 2.0).clamp(0.0, ihf);
            let rect = Rect::from_corners(x1, y1, (x1 + bw).min(iwf), (y1 + bh).min(ihf));
            let mut landmarks = [Point::default(); 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                p.y = lms.data[(2 * j) * plane + i] * bh + y1;
                p.x = lms.data[(2 * j + 1) * plane + i] * bw + x1;
            }
            faces.push(Face { rect, score, landmarks });
        }
    }
    Ok(faces)
}

/// RetinaFace (Pytorch_Retinaface layout): loc [1,N,4], conf [1,N,2] (softmaxed), landmarks
/// [1,N,10], against prior boxes over strides 8/16/32 with min sizes 16,32 / 64,128 / 256,512 and
/// variances 0.1 / 0.2.
fn decode_retinaface(outputs: &[crate::model::Output], thr: f32, iw: u32, ih: u32) -> Result<Vec<Face>, String> {
    let [loc, conf, lms] = outputs else {
        return Err(format!("{} outputs, expected 3 (loc, conf, landmarks)", outputs.len()));
    };
    let priors = retinaface_priors(iw, ih);
    let n = priors.len();
    expect_shape(loc, &[1, n, 4], "loc")?;
    expect_shape(conf, &[1, n, 2], "conf")?;
    expect_shape(lms, &[1, n, 10], "landmarks")?;
    let (iwf, ihf) = (iw as f32, ih as f32);
    let mut faces = Vec::new();
    for (k, p) in priors.iter().enumerate() {
        let score = conf.data[2 * k + 1];
        if score.is_nan() || score <= thr {
            continue;
        }
        let l = &loc.data[4 * k..4 * k + 4];
        let cx = p[0] + l[0] * 0.1 * p[2];
        let cy = p[1] + l[1] * 0.1 * p[3];
        let bw = p[2] * (l[2] * 0.2).exp();
        let bh = p[3] * (l[3] * 0.2).exp();
        let rect = Rect::from_corners(
            (cx - bw / 2.0) * iwf,
            (cy - bh / 2.0) * ihf,
            (cx + bw / 2.0) * iwf,
            (cy + bh / 2.0) * ihf,
        );
        let mut landmarks = [Point::default(); 5];
        for (j, q) in landmarks.iter_mut().enumerate() {
            q.x = (p[0] + lms.data[10 * k + 2 * j] * 0.1 * p[2]) * iwf;
            q.y = (p[1] + lms.data[10 * k + 2 * j + 1] * 0.1 * p[3]) * ihf;
        }
        faces.push(Face { rect, score, landmarks });
    }
    Ok(faces)
}

/// YuNet's strides, in the order of its output heads.
const YUNET_STRIDES: [u32; 3] = [8, 16, 32];

/// YuNet 2023mar (OpenCV zoo, `FaceDetectorYN`): 12 outputs in this order, for strides 8, 16, 32
/// (`n_s = (H/s)*(W/s)` cells, row-major, y outer): `cls_s [1,n_s,1]` and `obj_s [1,n_s,1]`
/// (both already sigmoid-ed), `bbox_s [1,n_s,4]` (dx, dy, log w, log h in stride units),
/// `kps_s [1,n_s,10]` ((x, y) per landmark in stride units from the cell's corner). Anchor-free:
/// for cell (r, c), `score = sqrt(clamp(cls) * clamp(obj))`, centre `((c + dx)*s, (r + dy)*s)`,
/// size `(exp(lw)*s, exp(lh)*s)`, landmark k `((c + kx)*s, (r + ky)*s)`. No clamping of boxes to
/// the input (OpenCV does none either; the letterbox maps them back). The input must be a multiple
/// of 32 on both sides, or the heads' cell counts do not divide evenly.
fn decode_yunet(outputs: &[crate::model::Output], thr: f32, iw: u32, ih: u32) -> Result<Vec<Face>, String> {
    if outputs.len() != 12 {
        return Err(format!("{} outputs, expected 12 (cls, obj, bbox, kps for strides 8, 16, 32)", outputs.len()));
    }
    let mut faces = Vec::new();
    for (k, &s) in YUNET_STRIDES.iter().enumerate() {
        let (fh, fw) = ((ih / s) as usize, (iw / s) as usize);
        let n = fh * fw;
        let (cls, obj, bbox, kps) = (&outputs[k], &outputs[3 + k], &outputs[6 + k], &outputs[9 + k]);
        expect_shape(cls, &[1, n, 1], &format!("cls_{s}"))?;
        expect_shape(obj, &[1, n, 1], &format!("obj_{s}"))?;
        expect_shape(bbox, &[1, n, 4], &format!("bbox_{s}"))?;
        expect_shape(kps, &[1, n, 10], &format!("kps_{s}"))?;
        let sf = s as f32;
        for i in 0..n {
            let score = (cls.data[i].clamp(0.0, 1.0) * obj.data[i].clamp(0.0, 1.0)).sqrt();
            // `is_nan` first: a NaN score is never a face (clamp keeps NaN).
            if score.is_nan() || score <= thr {
                continue;
            }
            let (r, c) = ((i / fw) as f32, (i % fw) as f32);
            let b = &bbox.data[4 * i..4 * i + 4];
            let (cx, cy) = ((c + b[0]) * sf, (r + b[1]) * sf);
            let (bw, bh) = (b[2].exp() * sf, b[3].exp() * sf);
            let rect = Rect { x: cx - bw / 2.0, y: cy - bh / 2.0, w: bw, h: bh };
            let mut landmarks = [Point::default(); 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                p.x = (c + kps.data[10 * i + 2 * j]) * sf;
                p.y = (r + kps.data[10 * i + 2 * j + 1]) * sf;
            }
            faces.push(Face { rect, score, landmarks });
        }
    }
    Ok(faces)
}

/// Prior boxes (cx, cy, w, h), normalised to the input size, in the model's output order.
fn retinaface_priors(iw: u32, ih: u32) -> Vec<[f32; 4]> {
    let mut priors = Vec::new();
    for (step, sizes) in [(8u32, [16.0f32, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])] {
        let (fh, fw) = (ih.div_ceil(step), iw.div_ceil(step));
        for i in 0..fh {
            for j in 0..fw {
                for s in sizes {
                    let cx = (j as f32 + 0.5) * step as f32 / iw as f32;
                    let cy = (i as f32 + 0.5) * step as f32 / ih as f32;
                    priors.push([cx, cy, s / iw as f32, s / ih as f32]);
                }
            }
        }
    }
    priors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, score: f32) -> Face {
        Face { rect: Rect { x, y: 0.0, w: 10.0, h: 10.0 }, score, landmarks: [Point::default(); 5] }
    }

    #[test]
    fn photos_of_many_sizes_keep_three_plans_and_tiles_keep_theirs() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let det = Detector::load(&models, DetectorConfig { kind: DetectorKind::Yunet, ..Default::default() })
            .unwrap_or_else(|e| panic!("models/yunet.onnx: {e}"));
        let frame = RgbImage::new(700, 500);
        for (w, h) in [(64, 64), (96, 64), (128, 96), (160, 128), (192, 160), (64, 64)] {
            let photo = RgbImage::new(w, h);
            assert!(det.detect(&photo).is_ok());
            assert!(det.detect_region(&frame, Rect { x: 0.0, y: 0.0, w: w as f32, h: h as f32 }, 1.0, (w, w)).is_ok());
        }
        // The load probe's 640x480 photo was pushed out; the five tile sizes stay.
        assert_eq!(det.plan_counts(), (5, PHOTO_PLANS));
    }

    /// `detect_region` reads the region through a view of the frame: the same faces, shifted,
    /// as detecting on a copy of the region, at native size and magnified.
    #[test]
    fn a_region_seen_through_a_view_finds_what_a_copy_of_it_finds() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let det = Detector::load(&models, DetectorConfig { kind: DetectorKind::Yunet, ..Default::default() }).unwrap();
        // An LFW photo (the README's test command does not fetch samples/; CI has only ../shared).
        let lfw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/lfw/Tony_Blair/Tony_Blair_0001.jpg");
        let photo = image::open(&lfw)
            .unwrap_or_else(|e| panic!("{} (LFW from ../shared/datasets): {e}", lfw.display()))
            .into_rgb8();
        let photo = image::imageops::resize(
            &photo,
            120,
            120 * photo.height() / photo.width(),
            image::imageops::FilterType::Triangle,
        );
        let mut frame = RgbImage::from_pixel(400, 300, Rgb([90, 90, 90]));
        image::imageops::overlay(&mut frame, &photo, 150, 60);
        let region = Rect { x: 140.0, y: 50.0, w: 150.0, h: 150.0 };
        let copy = image::imageops::crop_imm(&frame, 140, 50, 150, 150).to_image();
        for (scale, tile) in [(1.0, (160, 160)), (2.0, (320, 320))] {
            let seen = det.detect_region(&frame, region, scale, tile).unwrap();
            let copied = det.detect_scaled(&copy, scale, tile.0, tile.1, false).unwrap();
            assert!(!seen.is_empty(), "the face is found at scale {scale}");
            assert_eq!(seen.len(), copied.len());
            for (a, b) in seen.iter().zip(&copied) {
                assert_eq!((a.score, a.rect.w, a.rect.h), (b.score, b.rect.w, b.rect.h));
                assert_eq!((a.rect.x, a.rect.y), (b.rect.x + 140.0, b.rect.y + 50.0));
            }
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let kept = nms(vec![face(0.0, 0.6), face(1.0, 0.9), face(50.0, 0.7)], 0.3);
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }

    #[test]
    fn nms_with_nan_scores_neither_panics_nor_keeps_them() {
        let kept = nms(vec![face(0.0, f32::NAN), face(1.0, 0.8), face(30.0, f32::NAN), face(60.0, f32::INFINITY)], 0.3);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].score, 0.8);
    }

    /// The golden raw outputs of onnxruntime (`models/golden.py yunet`, 256x256 input) decode to
    /// exactly the face OpenCV's `FaceDetectorYN` reports on the same input (the golden's `best`,
    /// checked once against cv2 4.13.0): same score, box and landmarks, landmarks image-left eye
    /// first. Independent of tract, so a decoding bug is told apart from a runtime difference.
    #[test]
    fn yunet_decoding_matches_opencv_on_the_golden_outputs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("yunet_aaron_eckhart_0001.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("yunet_aaron_eckhart_0001.bin")).unwrap();
        let mut raw = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let outputs: Vec<crate::model::Output> = g["output_shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let shape: Vec<usize> = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let data = raw.by_ref().take(shape.iter().product()).collect();
                crate::model::Output { shape, data }
            })
            .collect();
        assert!(raw.next().is_none());
        let faces = nms(decode_yunet(&outputs, 0.5, 256, 256).unwrap(), 0.3);
        assert_eq!(faces.len(), 1, "one face in the photo: {faces:?}");
        let best = &g["best"];
        let f = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
        assert!((faces[0].score - f(&best["score"])).abs() < 1e-5);
        let b: Vec<f32> = best["box_x1y1x2y2"].as_array().unwrap().iter().map(f).collect();
        let r = faces[0].rect;
        for (o, t) in [r.x, r.y, r.x + r.w, r.y + r.h].iter().zip(&b) {
            assert!((o - t).abs() < 1e-3, "box {r:?} vs {b:?}");
        }
        let lm: Vec<f32> = best["landmarks_xy"].as_array().unwrap().iter().map(f).collect();
        for (j, p) in faces[0].landmarks.iter().enumerate() {
            assert!((p.x - lm[2 * j]).abs() < 1e-3 && (p.y - lm[2 * j + 1]).abs() < 1e-3, "landmark {j}: {p:?}");
        }
        assert!(faces[0].landmarks[0].x < faces[0].landmarks[1].x, "image-left eye first");
        // A wrong input size is a layout error, not a panic.
        assert!(decode_yunet(&outputs, 0.5, 320, 256).is_err());
    }

    #[test]
    fn retinaface_prior_count_matches_strides() {
        // 640x480: (80*60 + 40*30 + 20*15) cells, two anchors each.
        assert_eq!(retinaface_priors(640, 480).len(), 2 * (4800 + 1200 + 300));
    }
}
