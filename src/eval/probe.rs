//! The per-image work of an evaluation: find the labelled face in a full-resolution dataset image,
//! embed it at full quality (reference side), and embed the degraded versions of it (probe side):
//! `crop` mode degrades the aligned 112x112 face, `frame` mode shrinks the whole image and runs
//! the real detector on it, as a camera would see it.

use super::degrade::Draw;
use super::{EvalRestore, Mode};
use crate::align::{downsample, Alignment, ALIGNED_SIZE};
use crate::detect::Face;
use crate::embed::{Embedder, EmbedderKind, Embedding};
use crate::geometry::{Landmarks, Point, Rect};
use crate::recognize::{RecognizeError, Recognizer};
use crate::restore::{RestoreKind, Restorer};
use image::{imageops::FilterType, RgbImage};
use std::collections::HashMap;

/// Frames smaller than this are placed on a black canvas of this size before detection, so the
/// detector sees a face in a scene rather than a face filling a 32x32 input.
const MIN_CANVAS: u32 = 128;

/// Which degraded version of a probe an embedding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    pub mode: Mode,
    pub size: u32,
    pub restore: EvalRestore,
    /// `None` for `shipped` (the config chooses per face).
    pub embedder: Option<EmbedderKind>,
}

/// Embeddings of one probe variant already computed, by (restorer name, `None` when the face was
/// warped straight to 112; embedder): `shipped` reuses them instead of embedding again.
type Made = HashMap<(Option<String>, EmbedderKind), Embedding>;

/// The labelled face of a full-resolution image: what the detector found, or (on a miss) where
/// the average face of the dataset sits.
#[derive(Debug, Clone, Copy)]
pub struct LabelledFace {
    pub landmarks: Landmarks,
    pub rect: Rect,
    /// The detector's score (0 when it missed the face).
    pub score: f32,
    pub detected: bool,
}

/// Everything computed for one image.
#[derive(Debug, Default)]
pub struct ImageResult {
    pub reference: Option<Embedding>,
    /// Each probe variant's embedding and the embedder that made it.
    pub variants: HashMap<Variant, (Embedding, EmbedderKind)>,
    /// (mode, size) combinations where the detector missed the shrunk face.
    pub misses: Vec<(Mode, u32)>,
}

/// Picks the labelled face among detections in a full-resolution image: the one whose centre is
/// nearest the image centre among faces at least 15% of the image's shorter side (LFW centres
/// the labelled face; background faces are small).
pub fn pick_centre_face(faces: &[Face], w: u32, h: u32) -> Option<Face> {
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let min_w = 0.15 * w.min(h) as f32;
    let dist = |f: &Face| {
        let (fx, fy) = (f.rect.x + f.rect.w / 2.0, f.rect.y + f.rect.h / 2.0);
        (fx - cx).powi(2) + (fy - cy).powi(2)
    };
    let big: Vec<&Face> = faces.iter().filter(|f| f.rect.w >= min_w).collect();
    let pool: Vec<&Face> = if big.is_empty() { faces.iter().collect() } else { big };
    pool.into_iter().min_by(|a, b| dist(a).total_cmp(&dist(b))).copied()
}

/// Computes the reference embedding (always SFace: the gallery's template format) and/or the
/// probe variants of one image: every restorer x embedder, and with `shipped` what the config's
/// routing makes of the face.
#[allow(clippy::too_many_arguments)]
pub fn process(
    rec: &Recognizer,
    img: &RgbImage,
    face: &LabelledFace,
    want_reference: bool,
    probe_variants: &[(Mode, u32)],
    restorers: &[(RestoreKind, Box<dyn Restorer>)],
    embedders: &[(EmbedderKind, Embedder)],
    shipped: bool,
) -> Result<ImageResult, RecognizeError> {
    let mut out = ImageResult::default();
    let alignment = Alignment::from_landmarks(&face.landmarks).ok_or(RecognizeError::Degenerate)?;
    let aligned = alignment.warp(img, ALIGNED_SIZE).ok_or(RecognizeError::Degenerate)?;
    let full = rec.embedder().embed(&aligned)?;
    if want_reference {
        out.reference = Some(full.clone());
    }
    for &(mode, size) in probe_variants {
        match mode {
            Mode::Crop => {
                if size >= ALIGNED_SIZE {
                    // Never restored, and SFace at full resolution whatever the embedder axis
                    // says (every path takes SFace at 112 px).
                    for &(r, _) in restorers {
                        for &(e, _) in embedders {
                            let key = Variant { mode, size, restore: r.into(), embedder: Some(e) };
                            out.variants.insert(key, (full.clone(), EmbedderKind::Sface));
                        }
                    }
                    if shipped {
                        let key = Variant { mode, size, restore: EvalRestore::Shipped, embedder: None };
                        out.variants.insert(key, (full.clone(), EmbedderKind::Sface));
                    }
                    continue;
                }
                let low = downsample(&aligned, size);
                let mut made = Made::new();
                for (r, restorer) in restorers {
                    let restored = restorer.restore(&low)?;
                    for (e, embedder) in embedders {
                        let v = embedder.embed(&restored)?;
                        made.insert((Some(restorer.name().to_owned()), *e), v.clone());
                        out.variants.insert(Variant { mode, size, restore: (*r).into(), embedder: Some(*e) }, (v, *e));
                    }
                }
                if shipped {
                    let route = rec.route(size as f32)?;
                    let cached = made.get(&(route.restorer.map(|r| r.name().to_owned()), route.kind));
                    let v = match cached {
                        Some(v) => (v.clone(), route.kind),
                        None => rec.embed_native(&low, size as f32)?,
                    };
                    out.variants.insert(Variant { mode, size, restore: EvalRestore::Shipped, embedder: None }, v);
                }
            }
            Mode::Frame => {
                let shrunk = shrink_and_detect(rec, img, face, size, None)?;
                if shrunk.detected.is_none() {
                    out.misses.push((mode, size));
                }
                let (shrunk_img, al) = (shrunk.canvas, shrunk.alignment);
                let mut made = Made::new();
                for (r, restorer) in restorers {
                    let (face112, used) = rec.aligned_face(&shrunk_img, &al, restorer.as_ref())?;
                    for (e, embedder) in embedders {
                        // As in `farsight run`, a face of 112 px or more takes SFace on any axis.
                        let (kind, embedder) = match used {
                            None => (EmbedderKind::Sface, rec.embedder()),
                            Some(_) => (*e, embedder),
                        };
                        let v = match made.get(&(used.clone(), kind)) {
                            Some(v) => v.clone(),
                            None => embedder.embed(&face112)?,
                        };
                        made.insert((used.clone(), kind), v.clone());
                        out.variants
                            .insert(Variant { mode, size, restore: (*r).into(), embedder: Some(*e) }, (v, kind));
                    }
                }
                if shipped {
                    let route = rec.route(al.native_size())?;
                    let cached = made.get(&(route.restorer.map(|r| r.name().to_owned()), route.kind));
                    let v = match cached {
                        Some(v) => (v.clone(), route.kind),
                        None => rec.embed_aligned(&shrunk_img, &al)?,
                    };
                    out.variants.insert(Variant { mode, size, restore: EvalRestore::Shipped, embedder: None }, v);
                }
            }
        }
    }
    Ok(out)
}

/// A frame shrunk so the labelled face is a given size, and the face the detector found in it.
pub struct Shrunk {
    /// The shrunk frame on its canvas (see [`MIN_CANVAS`]).
    pub canvas: RgbImage,
    /// The detection that overlaps the labelled face, `None` on a miss.
    pub detected: Option<Face>,
    /// The detection, or on a miss the full-resolution face scaled into the canvas with score 0.
    pub face: Face,
    /// The alignment of `face`.
    pub alignment: Alignment,
}

/// Shrinks `img` so the labelled face's box is `size` px wide (never enlarges), detects faces in
/// it, and returns the canvas, the detection of the labelled face if found, and the face and
/// alignment to use: the detector's landmarks when found, else the full-resolution landmarks
/// scaled down (a miss). Without `draw` the shrink is an antialiased triangle filter; with one,
/// that draw's camera degradation (pixel-grid phase, blur, resize kernel, noise, JPEG).
pub fn shrink_and_detect(
    rec: &Recognizer,
    img: &RgbImage,
    face: &LabelledFace,
    size: u32,
    draw: Option<&Draw>,
) -> Result<Shrunk, RecognizeError> {
    let s = (size as f32 / face.rect.w.max(1.0)).min(1.0);
    // The draw's pixel-grid phase: whole source pixels cut off the top left (a fraction of one
    // shrunk pixel).
    let (cx, cy) = match draw {
        Some(d) if s < 1.0 => {
            let cut = |phase: f32, len: u32| ((phase / s).floor() as u32).min(len.saturating_sub(1));
            (cut(d.phase.0, img.width()), cut(d.phase.1, img.height()))
        }
        _ => (0, 0),
    };
    let cropped;
    let src = if (cx, cy) == (0, 0) {
        img
    } else {
        cropped = image::imageops::crop_imm(img, cx, cy, img.width() - cx, img.height() - cy).to_image();
        &cropped
    };
    let (w, h) = src.dimensions();
    let (sw, sh) = (((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1));
    let shrunk = match draw {
        // image's resize widens its filter by the shrink ratio: an antialiased downsample.
        None if s < 1.0 => image::imageops::resize(src, sw, sh, FilterType::Triangle),
        None => src.clone(),
        Some(d) => d.shrink(src, sw, sh, s, false),
    };
    let (cw, ch) = (sw.max(MIN_CANVAS), sh.max(MIN_CANVAS));
    let (ox, oy) = ((cw - sw) / 2, (ch - sh) / 2);
    let mut canvas = RgbImage::new(cw, ch);
    image::imageops::replace(&mut canvas, &shrunk, ox as i64, oy as i64);
    if let Some(d) = draw {
        canvas = d.sensor(canvas);
    }
    // Where the labelled face should be in the canvas: cut, scaled by s, then offset.
    let to_canvas = |p: Point| {
        Point::new(
            (p.x - cx as f32) * (sw as f32 / w as f32) + ox as f32,
            (p.y - cy as f32) * (sh as f32 / h as f32) + oy as f32,
        )
    };
    let tl = to_canvas(Point::new(face.rect.x, face.rect.y));
    let expected =
        Rect { x: tl.x, y: tl.y, w: face.rect.w * sw as f32 / w as f32, h: face.rect.h * sh as f32 / h as f32 };
    let faces = rec.detector()?.detect(&canvas)?;
    let detected = faces
        .iter()
        .map(|f| (f.rect.iou(&expected), f))
        .filter(|(iou, _)| *iou >= 0.3)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, f)| *f);
    let face = detected.unwrap_or(Face { rect: expected, score: 0.0, landmarks: face.landmarks.map(to_canvas) });
    let alignment = Alignment::from_landmarks(&face.landmarks).ok_or(RecognizeError::Degenerate)?;
    Ok(Shrunk { canvas, detected, face, alignment })
}

/// The mean landmarks and box of the detected faces, relative to their image size: where the
/// labelled face is assumed to be when the detector misses it at full resolution.
pub fn mean_face(found: &[(LabelledFace, u32, u32)]) -> Option<(Landmarks, Rect)> {
    let n = found.len() as f32;
    if n == 0.0 {
        return None;
    }
    let mut lm = [Point::default(); 5];
    let mut r = Rect::default();
    for (f, w, h) in found {
        let (w, h) = (*w as f32, *h as f32);
        for (acc, p) in lm.iter_mut().zip(&f.landmarks) {
            acc.x += p.x / w / n;
            acc.y += p.y / h / n;
        }
        r.x += f.rect.x / w / n;
        r.y += f.rect.y / h / n;
        r.w += f.rect.w / w / n;
        r.h += f.rect.h / h / n;
    }
    Some((lm, r))
}

/// [`mean_face`]'s relative landmarks and box, placed in a `w` x `h` image.
pub fn fallback_face(mean: &(Landmarks, Rect), w: u32, h: u32) -> LabelledFace {
    let (wf, hf) = (w as f32, h as f32);
    LabelledFace {
        landmarks: mean.0.map(|p| Point::new(p.x * wf, p.y * hf)),
        rect: Rect { x: mean.1.x * wf, y: mean.1.y * hf, w: mean.1.w * wf, h: mean.1.h * hf },
        score: 0.0,
        detected: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face_at(x: f32, y: f32, w: f32) -> Face {
        Face { rect: Rect { x, y, w, h: w }, score: 0.9, landmarks: [Point::default(); 5] }
    }

    #[test]
    fn the_centred_face_wins_over_background_faces() {
        let centre = face_at(75.0, 75.0, 100.0);
        let background_small_but_central = face_at(115.0, 115.0, 20.0);
        let big_corner = face_at(0.0, 0.0, 60.0);
        let picked = pick_centre_face(&[big_corner, background_small_but_central, centre], 250, 250).unwrap();
        assert_eq!(picked.rect, centre.rect);
        assert!(pick_centre_face(&[], 250, 250).is_none());
    }

    #[test]
    fn mean_face_is_relative_to_image_size() {
        let f = LabelledFace {
            landmarks: [Point::new(50.0, 100.0); 5],
            rect: Rect { x: 10.0, y: 20.0, w: 100.0, h: 100.0 },
            score: 0.9,
            detected: true,
        };
        let mean = mean_face(&[(f, 200, 200), (f, 100, 100)]).unwrap();
        let placed = fallback_face(&mean, 400, 400);
        // Relative x: (0.25 + 0.5) / 2 = 0.375 -> 150 px in a 400 px image.
        assert!((placed.landmarks[0].x - 150.0).abs() < 1e-3);
        assert!(!placed.detected);
    }
}
