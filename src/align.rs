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
/// face is larger than the output), the source is box-prefiltered first so the crop does not alias.
fn warp_similarity(src: &RgbImage, inv: &Similarity, out: u32) -> RgbImage {
    let shrink = inv.scale(); // source pixels per output pixel
    let prefiltered;
    let (src, inv) = if shrink > 1.5 {
        let factor = shrink.floor() as u32;
        prefiltered = box_downsample(src, factor);
        let f = factor as f32;
        // Source pixel centre c maps to c / f in the prefiltered image: (x + 0.5) / f - 0.5.
        let adj = Similarity { a: inv.a / f, b: inv.b / f, tx: inv.tx / f, ty: inv.ty / f };
        (&prefiltered, adj)
    } else {
        (src, *inv)
    };
    let (w, h) = src.dimensions();
    let mut dst = RgbImage::new(out, out);
    for y in 0..out {
        for x in 0..out {
            let p = inv.apply(Point::new(x as f32 + 0.5, y as f32 + 0.5));
            dst.put_pixel(x, y, bilinear(src, p.x - 0.5, p.y - 0.5, w, h));
        }
    }
    dst
}

fn bilinear(img: &RgbImage, x: f32, y: f32, w: u32, h: u32) -> Rgb<u8> {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (p00, p10, p01, p11) =
        (img.get_pixel(x0, y0), img.get_pixel(x1, y0), img.get_pixel(x0, y1), img.get_pixel(x1, y1));
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = p00.0[c] as f32 * (1.0 - fx) + p10.0[c] as f32 * fx;
        let bottom = p01.0[c] as f32 * (1.0 - fx) + p11.0[c] as f32 * fx;
        *o = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// Averages `factor` x `factor` blocks (the last partial block averages what it has).
fn box_downsample(src: &RgbImage, factor: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    let (ow, oh) = (w.div_ceil(factor).max(1), h.div_ceil(factor).max(1));
    RgbImage::from_fn(ow, oh, |ox, oy| {
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
        return box_downsample(face, w / size);
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

    #[test]
    fn area_downsample_averages_blocks() {
        let img = RgbImage::from_fn(112, 112, |x, _| if x % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([200, 100, 50]) });
        let small = downsample(&img, 14);
        assert_eq!(small.dimensions(), (14, 14));
        assert_eq!(small.get_pixel(3, 7).0, [100, 50, 25]);
    }
}
