//! `farsight bench --detectors`: recall by face size against cost, for every region detector,
//! with and without 2x magnification, the way the streaming pipeline runs them
//! (`scene::tiles` + [`Detector::detect_region`]). Issue 14 asks for this table to choose the
//! default region detector and the magnification thresholds of `[scene]`.
//!
//! **Frames.** LFW photos (whole 250x250 images, the identities of the chosen folds, first photo
//! of each, in name order) whose labelled face the *reference detector* (CenterFace, at full
//! resolution, the face nearest the centre as `farsight eval` picks it) finds. For each face size
//! N each photo is shrunk (antialiased) so that this face box is N px wide and pasted, with a
//! seeded jitter of up to ±8 px, into one 80x80 cell of a 640x480 frame (8 x 6 cells, 48 faces a
//! frame) over smooth colour noise; the photo is cut to its cell (at 24 px a photo is ~65 px, so
//! only far context is lost). Ground truth: the reference box, scaled and moved with the paste.
//! Other people in the photos are not labelled (see `other` below).
//!
//! **Searches.** `window`: for each face, the window a live track gets in `scene::plan` (a square
//! of `track_window` = 2.5 face widths centred on the face; a motion region of a small person,
//! the pasted photo, is about as large), at scale 1 or 2, cut into `scene::tiles`. `frame`: the
//! whole 640x480 frame (a full scan), scale 1 (one 640 tile) or 2 (six overlapping 640 tiles).
//!
//! **A hit:** a detection whose box centre lies in the ground-truth box and whose width is 0.5-2x
//! its width, matched one to one, best score first. Recall = hits / faces. The photos hold other
//! people too (13 of the first 48 have a second face YuNet finds at full size): every face any
//! studied detector finds in a photo at full resolution, besides the labelled one, is pasted
//! along as a *background face*. `false per search`: detections per window or frame that are
//! neither a hit nor centred in a background face, a fair count of false positives. Cost: median **thread CPU** ms (robust to a shared machine)
//! per window and per frame over the whole run, and per tile size in a separate timing loop.

use super::{percentile, BenchError};
use crate::detect::{Detector, DetectorConfig, DetectorKind, Face};
use crate::eval::{pick_centre_face, ImageRef};
use crate::geometry::Rect;
use crate::model::thread_cpu_ms;
use crate::scene::{tiles, SceneConfig, Tile, Window, TILES};
use image::{imageops::FilterType, Rgb, RgbImage};
use serde::Serialize;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const FRAME_W: u32 = 640;
const FRAME_H: u32 = 480;
const CELL: u32 = 80;
const JITTER: i64 = 8;

/// What `farsight bench --detectors` studies.
#[derive(Debug, Clone)]
pub struct RegionStudy {
    /// LFW-layout folder (`DIR/Name/Name_0001.jpg`).
    pub dataset: PathBuf,
    /// LFW pairs file: the identities of `folds` are used.
    pub pairs: PathBuf,
    pub folds: Vec<usize>,
    /// Face widths in frame pixels.
    pub sizes: Vec<u32>,
    /// Faces per size (photos).
    pub faces: usize,
    pub detectors: Vec<DetectorKind>,
    /// Timed runs per tile size in the cost table.
    pub iterations: usize,
    /// Seed of the background and the paste jitter.
    pub seed: u64,
}

/// One row: a detector, a search and a magnification, over all sizes.
#[derive(Debug, Clone, Serialize)]
pub struct RecallRow {
    pub detector: DetectorKind,
    /// `window` or `frame`.
    pub search: &'static str,
    pub scale: f32,
    /// Per size: (size, hits, faces).
    pub recall: Vec<(u32, usize, usize)>,
    /// Per size: the tile sizes the search used (window search), e.g. `96` or `96+128`.
    pub tiles: Vec<String>,
    /// Median CPU ms per window (window search) or per frame (frame search), over all sizes.
    pub cpu_ms: f64,
    /// Detections per search (per window or per frame) that are neither the labelled face(s) nor
    /// a background face: false positives. In a window they are mostly at its edge, where the
    /// cut-out meets the tile's black padding.
    pub false_per_search: f64,
    /// Mean detected box width / reference box width over hits.
    pub width_ratio: f64,
}

/// Median CPU ms of one `detect_region` call per tile size.
#[derive(Debug, Clone, Serialize)]
pub struct TileCost {
    pub detector: DetectorKind,
    pub per_tile_ms: Vec<(u32, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub faces_per_size: usize,
    pub photos_skipped: usize,
    pub rows: Vec<RecallRow>,
    pub costs: Vec<TileCost>,
}

/// A labelled photo: the image, its reference face box at full resolution, and the other faces
/// any studied detector finds in it.
struct Photo {
    name: String,
    img: RgbImage,
    face: Rect,
    background: Vec<Rect>,
}

/// A synthetic frame, the labelled faces pasted into it and the background faces that came along.
struct Frame {
    /// The photos' identities, in the order of `truth`.
    names: Vec<String>,
    img: RgbImage,
    truth: Vec<Rect>,
    background: Vec<Rect>,
}

/// SplitMix64: a seeded generator (the crate has no `rand`), good enough for noise and jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// Smooth colour noise, as `scripts/bench/make_video.py` draws its background: a coarse random
/// grid (one value per 40 px) upsampled, plus a little grain. No faces in it.
fn background(rng: &mut Rng) -> RgbImage {
    let (gw, gh) = (FRAME_W / 40, FRAME_H / 40);
    let coarse = RgbImage::from_fn(gw, gh, |_, _| Rgb([0, 1, 2].map(|_| rng.range(40, 215) as u8)));
    let mut img = image::imageops::resize(&coarse, FRAME_W, FRAME_H, FilterType::CatmullRom);
    for p in img.pixels_mut() {
        for c in &mut p.0 {
            *c = (i64::from(*c) + rng.range(-6, 6)).clamp(0, 255) as u8;
        }
    }
    img
}

/// The photos: first image of each identity of the folds, whose labelled face the reference
/// detector finds; returns them and the number skipped.
fn photos(study: &RegionStudy, reference: &Detector, all: &[Detector]) -> Result<(Vec<Photo>, usize), BenchError> {
    let pairs = crate::eval::read_pairs(&study.pairs).map_err(|e| BenchError::Input(e.to_string()))?;
    let mut names: Vec<String> = pairs
        .into_iter()
        .filter(|p| study.folds.contains(&p.fold))
        .flat_map(|p| [p.first.name, p.second.name])
        .collect();
    names.sort();
    names.dedup();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for name in names {
        if out.len() >= study.faces {
            break;
        }
        let path = ImageRef { name: name.clone(), number: 1 }.path(&study.dataset);
        let img = image::open(&path).map_err(|e| BenchError::Input(format!("{}: {e}", path.display())))?.into_rgb8();
        let faces = reference.detect(&img).map_err(|e| BenchError::Input(e.to_string()))?;
        let Some(face) = pick_centre_face(&faces, img.width(), img.height()) else {
            skipped += 1;
            continue;
        };
        let mut background: Vec<Rect> = Vec::new();
        for det in all {
            for f in det.detect(&img).map_err(|e| BenchError::Input(e.to_string()))? {
                if f.rect.iou(&face.rect) < 0.3 && background.iter().all(|b| b.iou(&f.rect) < 0.3) {
                    background.push(f.rect);
                }
            }
        }
        out.push(Photo { name, img, face: face.rect, background });
    }
    if out.len() < study.faces {
        return Err(BenchError::Input(format!(
            "only {} usable photos in the chosen folds, {} asked for",
            out.len(),
            study.faces
        )));
    }
    Ok((out, skipped))
}

/// Pastes every photo with its face `size` px wide, 48 to a frame.
fn frames(photos: &[Photo], size: u32, rng: &mut Rng) -> Vec<Frame> {
    let (cols, rows) = (FRAME_W / CELL, FRAME_H / CELL);
    let mut out = Vec::new();
    for chunk in photos.chunks((cols * rows) as usize) {
        let mut img = background(rng);
        let (mut truth, mut background, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (k, p) in chunk.iter().enumerate() {
            let s = size as f32 / p.face.w;
            let (pw, ph) = (p.img.width(), p.img.height());
            let (sw, sh) = (((pw as f32 * s).round() as u32).max(1), ((ph as f32 * s).round() as u32).max(1));
            let small = image::imageops::resize(&p.img, sw, sh, FilterType::Triangle);
            let (cx, cy) = ((k as u32 % cols) * CELL, (k as u32 / cols) * CELL);
            // Photo centre at the cell centre plus jitter; the part outside the cell is cut.
            let ox = i64::from(cx + CELL / 2) - i64::from(sw / 2) + rng.range(-JITTER, JITTER);
            let oy = i64::from(cy + CELL / 2) - i64::from(sh / 2) + rng.range(-JITTER, JITTER);
            for (x, y, px) in small.enumerate_pixels() {
                let (fx, fy) = (ox + i64::from(x), oy + i64::from(y));
                if fx >= i64::from(cx) && fx < i64::from(cx + CELL) && fy >= i64::from(cy) && fy < i64::from(cy + CELL)
                {
                    img.put_pixel(fx as u32, fy as u32, *px);
                }
            }
            // `resize` maps pixel edges to edges: a point scales by sw/pw.
            let (kx, ky) = (sw as f32 / pw as f32, sh as f32 / ph as f32);
            let place = |r: &Rect| Rect { x: ox as f32 + r.x * kx, y: oy as f32 + r.y * ky, w: r.w * kx, h: r.h * ky };
            truth.push(place(&p.face));
            names.push(p.name.clone());
            background.extend(p.background.iter().map(place));
        }
        out.push(Frame { names, img, truth, background });
    }
    out
}

/// Matches detections to truth one to one (best score first); returns, per truth box, the
/// matched detection's width, and the number of detections that are neither a hit nor centred
/// in a `background` face. `names` (the photos of `truth`) only label the debug log of false
/// detections (`RUST_LOG=farsight::bench=debug`): where, in face widths from which labelled face.
fn score_faces(faces: &[Face], truth: &[Rect], background: &[Rect], names: &[String]) -> (Vec<Option<f32>>, usize) {
    let mut matched: Vec<Option<f32>> = vec![None; truth.len()];
    let mut sorted: Vec<&Face> = faces.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut other = 0;
    for f in sorted {
        let (fx, fy) = (f.rect.x + f.rect.w / 2.0, f.rect.y + f.rect.h / 2.0);
        let hit = truth.iter().enumerate().find(|(i, t)| {
            matched[*i].is_none()
                && fx >= t.x
                && fx <= t.x + t.w
                && fy >= t.y
                && fy <= t.y + t.h
                && f.rect.w >= 0.5 * t.w
                && f.rect.w <= 2.0 * t.w
        });
        match hit {
            Some((i, _)) => matched[i] = Some(f.rect.w),
            None if background.iter().any(|b| fx >= b.x && fx <= b.x + b.w && fy >= b.y && fy <= b.y + b.h) => {}
            None => {
                let near = truth.iter().enumerate().min_by(|(_, a), (_, b)| {
                    let d = |t: &Rect| (t.x + t.w / 2.0 - fx).powi(2) + (t.y + t.h / 2.0 - fy).powi(2);
                    d(a).total_cmp(&d(b))
                });
                if let Some((i, t)) = near {
                    log::debug!(
                        "false detection w {:.1} score {:.3}: ({:+.2}, {:+.2}) face widths from the face of {}",
                        f.rect.w,
                        f.score,
                        (fx - t.x - t.w / 2.0) / t.w,
                        (fy - t.y - t.h / 2.0) / t.w,
                        names.get(i).map_or("?", String::as_str)
                    );
                }
                other += 1;
            }
        }
    }
    (matched, other)
}

/// Runs the detector on a window's tiles, as `scene::detect` does; returns the faces and the
/// thread CPU ms it took.
fn search(det: &Detector, frame: &RgbImage, window: &Window) -> Result<(Vec<Face>, f64, Vec<Tile>), BenchError> {
    let start = thread_cpu_ms();
    let mut faces = Vec::new();
    let mut used = Vec::new();
    for (rect, tile) in tiles(window) {
        used.push(tile);
        faces.extend(det.detect_region(frame, rect, window.scale, tile).map_err(|e| BenchError::Input(e.to_string()))?);
    }
    let faces = crate::detect::nms(faces, det.config().nms_iou);
    Ok((faces, thread_cpu_ms() - start, used))
}

/// Runs the study (single thread; a few minutes on a 2-core machine with the defaults).
pub fn run(study: &RegionStudy, models_dir: &Path, base: &DetectorConfig) -> Result<RegionReport, BenchError> {
    let load = |kind| {
        Detector::load(models_dir, DetectorConfig { kind, ..base.clone() })
            .map_err(|e| BenchError::Input(e.to_string()))
    };
    if study.sizes.is_empty() || study.faces == 0 || study.sizes.iter().any(|&n| !(4..=CELL).contains(&n)) {
        return Err(BenchError::Input(format!(
            "face sizes must be 4-{CELL} px and at least one face is needed (sizes {:?}, faces {})",
            study.sizes, study.faces
        )));
    }
    let reference = load(DetectorKind::Centerface)?;
    let all = study.detectors.iter().map(|&k| load(k)).collect::<Result<Vec<_>, _>>()?;
    let (photos, photos_skipped) = photos(study, &reference, &all)?;
    drop((reference, all));
    let mut rng = Rng(study.seed);
    let sets: Vec<(u32, Vec<Frame>)> = study.sizes.iter().map(|&n| (n, frames(&photos, n, &mut rng))).collect();
    let track_window = SceneConfig::default().track_window;
    let (mut rows, mut costs) = (Vec::new(), Vec::new());
    for &kind in &study.detectors {
        let det = load(kind)?;
        // Cost per tile size on a real frame's native pixels (the 16 px set; the 640 tile holds
        // the whole 640x480 frame, as a 1x full scan does), no magnification; first, so every
        // plan is made (tract optimises on first use, tens of ms) before the searches are timed.
        let frame = &sets.iter().find(|(n, _)| *n == 16).unwrap_or(&sets[0]).1[0].img;
        let mut per_tile_ms = Vec::new();
        for &t in &TILES {
            let (w, h) = (t.min(FRAME_W) as f32, t.min(FRAME_H) as f32);
            let rect = Rect { x: (FRAME_W as f32 - w) / 2.0, y: (FRAME_H as f32 - h) / 2.0, w, h };
            let run = || det.detect_region(frame, rect, 1.0, (t, t)).map_err(|e| BenchError::Input(e.to_string()));
            run()?;
            let mut ms = Vec::new();
            for _ in 0..study.iterations.max(1) {
                let start = thread_cpu_ms();
                std::hint::black_box(run()?);
                ms.push(thread_cpu_ms() - start);
            }
            ms.sort_by(f64::total_cmp);
            per_tile_ms.push((t, percentile(&ms, 0.5)));
        }
        costs.push(TileCost { detector: kind, per_tile_ms });
        for search_kind in ["window", "frame"] {
            for scale in [1.0f32, 2.0] {
                let mut row = RecallRow {
                    detector: kind,
                    search: search_kind,
                    scale,
                    recall: Vec::new(),
                    tiles: Vec::new(),
                    cpu_ms: f64::NAN,
                    false_per_search: f64::NAN,
                    width_ratio: f64::NAN,
                };
                let (mut cpu, mut ratios, mut other, mut searches) = (Vec::new(), Vec::new(), 0usize, 0usize);
                for (n, set) in &sets {
                    let (mut hits, mut total) = (0, 0);
                    let mut tile_sets: Vec<Vec<Tile>> = Vec::new();
                    for fr in set {
                        total += fr.truth.len();
                        if search_kind == "frame" {
                            let rect = Rect { x: 0.0, y: 0.0, w: FRAME_W as f32, h: FRAME_H as f32 };
                            let (faces, ms, _) = search(&det, &fr.img, &Window { rect, scale })?;
                            cpu.push(ms);
                            let (m, o) = score_faces(&faces, &fr.truth, &fr.background, &fr.names);
                            other += o;
                            searches += 1;
                            for (w, t) in m.iter().zip(&fr.truth) {
                                if let Some(w) = w {
                                    hits += 1;
                                    ratios.push(f64::from(w / t.w));
                                }
                            }
                            continue;
                        }
                        for (t, name) in fr.truth.iter().zip(&fr.names) {
                            let side = t.w * track_window;
                            let (cx, cy) = (t.x + t.w / 2.0, t.y + t.h / 2.0);
                            let rect = Rect { x: cx - side / 2.0, y: cy - side / 2.0, w: side, h: side };
                            let (faces, ms, used) = search(&det, &fr.img, &Window { rect, scale })?;
                            cpu.push(ms);
                            if !tile_sets.contains(&used) {
                                tile_sets.push(used);
                            }
                            let (m, o) = score_faces(
                                &faces,
                                std::slice::from_ref(t),
                                &fr.background,
                                std::slice::from_ref(name),
                            );
                            other += o;
                            searches += 1;
                            if let Some(w) = m[0] {
                                hits += 1;
                                ratios.push(f64::from(w / t.w));
                            }
                        }
                    }
                    log::info!("{kind:?} {search_kind} x{scale} {n} px: recall {hits}/{total}");
                    row.recall.push((*n, hits, total));
                    row.tiles.push(
                        tile_sets
                            .iter()
                            .map(|t| {
                                t.iter()
                                    .map(|(w, h)| if w == h { w.to_string() } else { format!("{w}x{h}") })
                                    .collect::<Vec<_>>()
                                    .join("+")
                            })
                            .collect::<Vec<_>>()
                            .join("/"),
                    );
                }
                cpu.sort_by(f64::total_cmp);
                row.cpu_ms = percentile(&cpu, 0.5);
                if searches > 0 {
                    row.false_per_search = other as f64 / searches as f64;
                }
                if !ratios.is_empty() {
                    row.width_ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
                }
                rows.push(row);
            }
        }
    }
    Ok(RegionReport { faces_per_size: photos.len(), photos_skipped, rows, costs })
}

/// The two Markdown tables: recall by face size (with cost), and CPU ms per tile size.
pub fn format(report: &RegionReport) -> String {
    let mut out = String::new();
    let Some(first) = report.rows.first() else { return out };
    let sizes: Vec<u32> = first.recall.iter().map(|r| r.0).collect();
    let _ = writeln!(out, "Recall by face width ({} faces per size; hits/faces):\n", report.faces_per_size);
    let _ = write!(out, "| detector | search | x |");
    for n in &sizes {
        let _ = write!(out, " {n} px |");
    }
    let _ = writeln!(out, " tiles ({}) | CPU ms per search | false per search | box w / ref |", join(&sizes));
    let _ = write!(out, "| --- | --- | ---: |");
    for _ in &sizes {
        let _ = write!(out, " ---: |");
    }
    let _ = writeln!(out, " --- | ---: | ---: | ---: |");
    for r in &report.rows {
        let _ = write!(out, "| {:?} | {} | {} |", r.detector, r.search, r.scale);
        for (_, hits, total) in &r.recall {
            let _ = write!(out, " {:.2} |", *hits as f64 / (*total).max(1) as f64);
        }
        let tiles = if r.search == "frame" {
            let rect = Rect { x: 0.0, y: 0.0, w: FRAME_W as f32, h: FRAME_H as f32 };
            let t = tiles(&Window { rect, scale: r.scale });
            format!("{} x {}x{}", t.len(), t[0].1 .0, t[0].1 .1)
        } else {
            r.tiles.join(", ")
        };
        let other = format!("{:.3}", r.false_per_search);
        let _ = writeln!(out, " {tiles} | {:.1} | {other} | {:.2} |", r.cpu_ms, r.width_ratio);
    }
    let _ = writeln!(out, "\nCPU ms per tile of native pixels (median of `detect_region`, decode and NMS included):\n");
    let _ = write!(out, "| detector |");
    for t in &TILES {
        let _ = write!(out, " {t} |");
    }
    let _ = writeln!(out);
    let _ = write!(out, "| --- |");
    for _ in &TILES {
        let _ = write!(out, " ---: |");
    }
    let _ = writeln!(out);
    for c in &report.costs {
        let _ = write!(out, "| {:?} |", c.detector);
        for (_, ms) in &c.per_tile_ms {
            let _ = write!(out, " {ms:.1} |");
        }
        let _ = writeln!(out);
    }
    if report.photos_skipped > 0 {
        let _ =
            writeln!(out, "\n{} photos skipped: the reference detector found no face in them.", report.photos_skipped);
    }
    out
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Point;

    fn face(x: f32, y: f32, w: f32, score: f32) -> Face {
        Face { rect: Rect { x, y, w, h: w }, score, landmarks: [Point::default(); 5] }
    }

    #[test]
    fn a_hit_is_centred_in_the_truth_and_about_its_size_and_counts_once() {
        let truth = [Rect { x: 10.0, y: 10.0, w: 12.0, h: 12.0 }];
        // Centred and the right size; a second detection of the same face is false.
        let (m, other) = score_faces(&[face(11.0, 11.0, 10.0, 0.9), face(12.0, 12.0, 9.0, 0.8)], &truth, &[], &[]);
        assert_eq!((m, other), (vec![Some(10.0)], 1));
        // Centred but far too large (a whole head around a tiny face) is no hit.
        let (m, other) = score_faces(&[face(0.0, 0.0, 32.0, 0.9)], &truth, &[], &[]);
        assert_eq!((m, other), (vec![None], 1));
        // A face of someone else in the photo is neither a hit nor false.
        let beside = [Rect { x: 30.0, y: 10.0, w: 12.0, h: 12.0 }];
        let (m, other) = score_faces(&[face(31.0, 11.0, 10.0, 0.9)], &truth, &beside, &[]);
        assert_eq!((m, other), (vec![None], 0));
    }

    #[test]
    fn the_generator_is_seeded_and_stays_in_range() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..1000 {
            let v = a.range(-8, 8);
            assert_eq!(v, b.range(-8, 8));
            assert!((-8..=8).contains(&v));
        }
    }
}
