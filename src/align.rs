//! Face alignment: the similarity transform from the five detected landmarks to the standard
//! ArcFace 112x112 template, and the bilinear warp that produces the aligned crop. A face that
//! covers fewer pixels than the template is aligned at its *native* resolution (an n x n crop of
//! the same template scaled down) so the restorer, not the warp, does the upsampling.

use crate::geometry::{Landmarks, Point, Similarity};
use image::{Rgb, RgbImage};

/// Side of the aligned face the embedder takes.
pub const ALIGNED_SIZE: u32 = 112;

/// The ArcFace / InsightFace 112x112 five-point template (left eye, right eye, nose, left and
/// right mouth corners). SFace was trained on crops made with it.
pub const TEMPLATE: Landmarks = [
    Point::new(38.2946, 51.6963),
    Point::new(73.5318, 51.5014),
    Point::new(56.0252, 71.7366),
    Point::new(41.5493, 92.3655),
    Point::new(70.7299, 92.2041),
];

/// Where a face sits in its frame, relative to the template.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Frame -> 112x112 template coordinates.
    pub to_template: Similarity,
}

impl Alignment {
    /// Estimates the alignment from detected landmarks; `None` if they are degenerate.
    pub fn from_landmarks(landmarks: &Landmarks) -> Option<Self> {
        Similarity::estimate(landmarks, &TEMPLATE).map(|to_template| Self { to_template })
    }

    /// How many frame pixels span the 112-pixel template: the face's native resolution. A face
    /// 28 px across in the frame gives about 28 here.
    pub fn native_size(&self) -> f32 {
        ALIGNED_SIZE as f32 / self.to_template.scale()
    }

    /// Warps the face out of `frame` into an `out` x `out` crop of the template (112 gives the
    /// standard aligned face; smaller sizes give the same crop at lower resolution).
    pub fn warp(&self, frame: &RgbImage, out: u32) -> Option<RgbImage> {
        let to_out = self.to_template.then_scale(out as f32 / ALIGNED_SIZE as f32);
        let inv = to_out.inverse()?;
        Some(warp_similarity(frame, &inv, out))
    }
}

/// Fills an `out` x `out` image by sampling `src` bilinearly at `inv(x + 0.5, y + 0.5) - 0.5`
/// (pixel centres), replicating the border outside the frame. When the transform shrinks (the
/// face is larger than the output), the source is box-prefiltered first so the crop does not alias;
/// only the blocks the crop samples are filtered, not the whole frame (a large face in a large
/// photo cost ~15 ms of filtering the rest of the frame).
fn warp_similarity(src: &RgbImage, inv: &Similarity, out: u32) -> RgbImage {
    let shrink = inv.scale(); // source pixels per output pixel
    if shrink <= 1.5 {
        return sample(&Window::whole(src), inv, out);
    }
    let factor = shrink.floor() as u32;
    let blocks = sampled_blocks(src.dimensions(), inv, out, factor);
    let prefiltered = box_downsample(src, factor, blocks);
    let f = factor as f32;
    // Source pixel centre c maps to c / f in the prefiltered frame: (x + 0.5) / f - 0.5.
    let adj = Similarity { a: inv.a / f, b: inv.b / f, tx: inv.tx / f, ty: inv.ty / f };
    let all = Blocks::all(src.dimensions(), factor);
    sample(&Window { img: &prefiltered, x0: blocks.x0, y0: blocks.y0, w: all.x1, h: all.y1 }, &adj, out)
}

/// Part of a (logical) `w` x `h` image: `img` holds its pixels from (`x0`, `y0`) on. Sampling
/// computes in whole-image coordinates, so a window gives bit for bit what the whole image would.
struct Window<'a> {
    img: &'a RgbImage,
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
}

impl<'a> Window<'a> {
    fn whole(img: &'a RgbImage) -> Self {
        Self { img, x0: 0, y0: 0, w: img.width(), h: img.height() }
    }

    fn get(&self, x: u32, y: u32) -> &Rgb<u8> {
        self.img.get_pixel(x - self.x0, y - self.y0)
    }
}

fn sample(src: &Window, inv: &Similarity, out: u32) -> RgbImage {
    let mut dst = RgbImage::new(out, out);
    for y in 0..out {
        for x in 0..out {
            let p = inv.apply(Point::new(x as f32 + 0.5, y as f32 + 0.5));
            dst.put_pixel(x, y, bilinear(src, p.x - 0.5, p.y - 0.5));
        }
    }
    dst
}

/// A range of `factor` x `factor` blocks of a frame: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Blocks {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Blocks {
    fn all((w, h): (u32, u32), factor: u32) -> Self {
        Self { x0: 0, y0: 0, x1: w.div_ceil(factor).max(1), y1: h.div_ceil(factor).max(1) }
    }
}

/// The blocks that bilinear sampling of the `out` x `out` crop can read, clamped to the frame:
/// the bounding box of the crop's corners in block coordinates, one block of margin each side
/// for the bilinear neighbours and rounding. Sampling clamps to the frame's border, which lies
/// inside these blocks whenever the crop reaches past it.
fn sampled_blocks(frame: (u32, u32), inv: &Similarity, out: u32, factor: u32) -> Blocks {
    let all = Blocks::all(frame, factor);
    let f = factor as f32;
    let corners = [(0.0, 0.0), (out as f32, 0.0), (0.0, out as f32), (out as f32, out as f32)]
        .map(|(x, y)| inv.apply(Point::new(x, y)));
    let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for c in corners {
        (lo_x, lo_y, hi_x, hi_y) = (lo_x.min(c.x / f), lo_y.min(c.y / f), hi_x.max(c.x / f), hi_y.max(c.y / f));
    }
    let clamp = |v: f32, hi: u32| (v.max(0.0) as u32).min(hi);
    let b = Blocks {
        x0: clamp(lo_x.floor() - 1.0, all.x1 - 1),
        y0: clamp(lo_y.floor() - 1.0, all.y1 - 1),
        x1: clamp(hi_x.ceil() + 2.0, all.x1),
        y1: clamp(hi_y.ceil() + 2.0, all.y1),
    };
    // A clamped sample still reads its right and lower neighbour (with weight 0).
    Blocks { x1: b.x1.max(b.x0 + 2).min(all.x1), y1: b.y1.max(b.y0 + 2).min(all.y1), ..b }
}

fn bilinear(img: &Window, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (img.w, img.h);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (p00, p10, p01, p11) = (img.get(x0, y0), img.get(x1, y0), img.get(x0, y1), img.get(x1, y1));
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = p00.0[c] as f32 * (1.0 - fx) + p10.0[c] as f32 * fx;
        let bottom = p01.0[c] as f32 * (1.0 - fx) + p11.0[c] as f32 * fx;
        *o = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// Averages `factor` x `factor` blocks of `src` (the last partial block averages what it has),
/// for the blocks in `blocks` only: output pixel (0, 0) is block (`blocks.x0`, `blocks.y0`).
fn box_downsample(src: &RgbImage, factor: u32, blocks: Blocks) -> RgbImage {
    let (w, h) = src.dimensions();
    RgbImage::from_fn(blocks.x1 - blocks.x0, blocks.y1 - blocks.y0, |bx, by| {
        let (ox, oy) = (bx + blocks.x0, by + blocks.y0);
        let mut sum = [0u32; 3];
        let mut n = 0u32;
        for y in oy * factor..((oy + 1) * factor).min(h) {
            for x in ox * factor..((ox + 1) * factor).min(w) {
                for (acc, v) in sum.iter_mut().zip(src.get_pixel(x, y).0) {
                    *acc += v as u32;
                }
                n += 1;
            }
        }
        let n = n.max(1);
        Rgb([((sum[0] + n / 2) / n) as u8, ((sum[1] + n / 2) / n) as u8, ((sum[2] + n / 2) / n) as u8])
    })
}

/// Antialiased downsampling of a square face to `size` x `size`: an exact area average when the
/// side divides evenly (112 -> 56, 28, 14, 7), a triangle filter scaled to the ratio otherwise.
/// This is how low resolution is synthesised for evaluation and training.
pub fn downsample(face: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = face.dimensions();
    if size >= w && size >= h {
        return face.clone();
    }
    if w == h && w % size == 0 {
        return box_downsample(face, w / size, Blocks::all((w, h), w / size));
    }
    image::imageops::resize(face, size, size, image::imageops::FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_landmarks_align_to_themselves() {
        let al = Alignment::from_landmarks(&TEMPLATE).unwrap();
        assert!((al.native_size() - 112.0).abs() < 1e-3);
        for p in TEMPLATE {
            let q = al.to_template.apply(p);
            assert!((q.x - p.x).abs() < 1e-3 && (q.y - p.y).abs() < 1e-3);
        }
    }

    #[test]
    fn a_face_half_the_template_size_has_native_size_56() {
        let half: Vec<Point> = TEMPLATE.iter().map(|p| Point::new(p.x * 0.5 + 10.0, p.y * 0.5 + 20.0)).collect();
        let lm: Landmarks = [half[0], half[1], half[2], half[3], half[4]];
        let al = Alignment::from_landmarks(&lm).unwrap();
        assert!((al.native_size() - 56.0).abs() < 1e-2);
    }

    #[test]
    fn warp_moves_a_marked_pixel_to_the_template_position() {
        // A frame where the face is the template shifted by (30, 40): the warp must undo the shift.
        let mut frame = RgbImage::new(200, 200);
        frame.put_pixel(30 + 38, 40 + 51, Rgb([255, 255, 255]));
        let lm = TEMPLATE.map(|p| Point::new(p.x + 30.0, p.y + 40.0));
        let crop = Alignment::from_landmarks(&lm).unwrap().warp(&frame, 112).unwrap();
        assert_eq!(crop.get_pixel(38, 51).0, [255, 255, 255]);
        assert_eq!(crop.get_pixel(60, 60).0, [0, 0, 0]);
    }

    /// The pre-region warp: the whole frame box-filtered, then sampled.
    fn warp_prefiltering_the_whole_frame(src: &RgbImage, inv: &Similarity, out: u32) -> RgbImage {
        let factor = inv.scale().floor() as u32;
        let f = factor as f32;
        let adj = Similarity { a: inv.a / f, b: inv.b / f, tx: inv.tx / f, ty: inv.ty / f };
        sample(&Window::whole(&box_downsample(src, factor, Blocks::all(src.dimensions(), factor))), &adj, out)
    }

    #[test]
    fn filtering_only_the_sampled_blocks_gives_the_whole_frame_result() {
        // Noise, so any misplaced block shows; faces 3-9x the crop, turned, inside the frame,
        // across its edges and corners, and wholly outside it.
        let mut seed = 12345u32;
        let frame = RgbImage::from_fn(901, 677, |_, _| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            Rgb([(seed >> 24) as u8, (seed >> 16) as u8, (seed >> 8) as u8])
        });
        let mut cases = 0;
        for scale in [3.0f32, 4.7, 9.2] {
            for angle in [0.0f32, 0.3, -1.1, 2.5] {
                for (cx, cy) in [(450.0, 330.0), (20.0, 300.0), (890.0, 10.0), (450.0, 676.0), (-400.0, 900.0)] {
                    for out in [112, 28] {
                        let s = scale * 112.0 / out as f32;
                        let (a, b) = (s * angle.cos(), s * angle.sin());
                        let half = out as f32 / 2.0;
                        let inv = Similarity { a, b, tx: cx - (a * half - b * half), ty: cy - (b * half + a * half) };
                        assert_eq!(
                            warp_similarity(&frame, &inv, out),
                            warp_prefiltering_the_whole_frame(&frame, &inv, out),
                            "scale {scale}, angle {angle}, centre ({cx}, {cy}), out {out}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 120);
    }

    #[test]
    fn area_downsample_averages_blocks() {
        let img = RgbImage::from_fn(112, 112, |x, _| if x % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([200, 100, 50]) });
        let small = downsample(&img, 14);
        assert_eq!(small.dimensions(), (14, 14));
        assert_eq!(small.get_pixel(3, 7).0, [100, 50, 25]);
    }
}
