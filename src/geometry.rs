//! Pure 2-D geometry shared by detection, alignment and evaluation: rectangles, the five facial
//! landmarks, the letterbox that fits a frame into a model input (and its exact inverse), and the
//! least-squares similarity transform (Umeyama) that aligns landmarks to a template.
//! Nothing here allocates images or touches a model.

use serde::{Deserialize, Serialize};

/// A point in pixel coordinates (x to the right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }
}

/// An axis-aligned rectangle in pixel coordinates: top-left corner plus size.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    /// The rectangle spanning two corners (x1, y1) and (x2, y2); negative spans become empty.
    pub fn from_corners(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x: x1, y: y1, w: (x2 - x1).max(0.0), h: (y2 - y1).max(0.0) }
    }

    pub fn area(&self) -> f32 {
        self.w * self.h
    }

    /// Intersection over union, 0 when either rectangle is empty.
    pub fn iou(&self, other: &Rect) -> f32 {
        let x1 = self.x.max(other.x);
        let y1 = self.y.max(other.y);
        let x2 = (self.x + self.w).min(other.x + other.w);
        let y2 = (self.y + self.h).min(other.y + other.h);
        let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// The five facial landmarks in the conventional order: left eye, right eye, nose tip, left mouth
/// corner, right mouth corner ("left" as seen in the image).
pub type Landmarks = [Point; 5];

/// How a frame of `src` size was fitted into a model input of `dst` size: uniformly scaled by
/// `scale` and placed at (`pad_x`, `pad_y`), the rest padded. Keeps the aspect ratio, so
/// non-square frames get padding on one axis; [`Letterbox::to_frame`] undoes both the offset and
/// the scale (peers forget the offset and get shifted boxes on non-square frames).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    /// Size of the scaled frame inside the input, in whole pixels.
    pub inner_w: u32,
    pub inner_h: u32,
}

impl Letterbox {
    /// Fits a `src_w` x `src_h` frame centred into `dst_w` x `dst_h`, as large as it goes.
    pub fn fit(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        let scale = (dst_w as f32 / src_w.max(1) as f32).min(dst_h as f32 / src_h.max(1) as f32);
        Self::with_scale(src_w, src_h, scale, dst_w, dst_h)
    }

    /// Scales a `src_w` x `src_h` frame by `scale` (clipped so it fits) and centres it in
    /// `dst_w` x `dst_h`.
    pub fn with_scale(src_w: u32, src_h: u32, scale: f32, dst_w: u32, dst_h: u32) -> Self {
        let fit = (dst_w as f32 / src_w.max(1) as f32).min(dst_h as f32 / src_h.max(1) as f32);
        let scale = scale.min(fit);
        let inner_w = ((src_w as f32 * scale).round() as u32).clamp(1, dst_w.max(1));
        let inner_h = ((src_h as f32 * scale).round() as u32).clamp(1, dst_h.max(1));
        let pad_x = ((dst_w - inner_w) / 2) as f32;
        let pad_y = ((dst_h - inner_h) / 2) as f32;
        Self { scale, pad_x, pad_y, inner_w, inner_h }
    }

    /// Maps a point from frame coordinates into model-input coordinates.
    pub fn to_input(&self, p: Point) -> Point {
        Point::new(p.x * self.scale + self.pad_x, p.y * self.scale + self.pad_y)
    }

    /// Maps a point from model-input coordinates back into frame coordinates.
    pub fn to_frame(&self, p: Point) -> Point {
        Point::new((p.x - self.pad_x) / self.scale, (p.y - self.pad_y) / self.scale)
    }

    /// Maps a rectangle from model-input coordinates back into frame coordinates.
    pub fn rect_to_frame(&self, r: Rect) -> Rect {
        let tl = self.to_frame(Point::new(r.x, r.y));
        Rect { x: tl.x, y: tl.y, w: r.w / self.scale, h: r.h / self.scale }
    }
}

/// A 2-D similarity transform (rotation, uniform scale, translation):
/// `x' = a*x - b*y + tx`, `y' = b*x + a*y + ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    pub fn apply(&self, p: Point) -> Point {
        Point::new(self.a * p.x - self.b * p.y + self.tx, self.b * p.x + self.a * p.y + self.ty)
    }

    /// The uniform scale factor of the transform.
    pub fn scale(&self) -> f32 {
        (self.a * self.a + self.b * self.b).sqrt()
    }

    /// The inverse transform, `None` when the transform is degenerate (zero scale).
    pub fn inverse(&self) -> Option<Similarity> {
        let d = self.a * self.a + self.b * self.b;
        if d <= f32::EPSILON || !d.is_finite() {
            return None;
        }
        let (a, b) = (self.a / d, -self.b / d);
        Some(Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }

    /// This transform followed by a uniform scaling by `s` about the origin.
    pub fn then_scale(&self, s: f32) -> Similarity {
        Similarity { a: self.a * s, b: self.b * s, tx: self.tx * s, ty: self.ty * s }
    }

    /// Least-squares similarity mapping `src` points onto `dst` points (Umeyama 1991, without
    /// reflection). `None` when the source points are degenerate (all equal, or not finite).
    pub fn estimate(src: &[Point], dst: &[Point]) -> Option<Similarity> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = |ps: &[Point]| {
            let (sx, sy) = ps[..n].iter().fold((0.0f64, 0.0f64), |(x, y), p| (x + p.x as f64, y + p.y as f64));
            (sx / nf, sy / nf)
        };
        let (sxm, sym) = mean(src);
        let (dxm, dym) = mean(dst);
        // For a similarity without reflection the closed form reduces to two sums.
        let (mut num_a, mut num_b, mut var) = (0.0f64, 0.0f64, 0.0f64);
        for (s, d) in src[..n].iter().zip(&dst[..n]) {
            let (sx, sy) = (s.x as f64 - sxm, s.y as f64 - sym);
            let (dx, dy) = (d.x as f64 - dxm, d.y as f64 - dym);
            num_a += sx * dx + sy * dy;
            num_b += sx * dy - sy * dx;
            var += sx * sx + sy * sy;
        }
        if var <= 1e-12 || !var.is_finite() || !num_a.is_finite() || !num_b.is_finite() {
            return None;
        }
        let a = num_a / var;
        let b = num_b / var;
        let tx = dxm - (a * sxm - b * sym);
        let ty = dym - (b * sxm + a * sym);
        Some(Similarity { a: a as f32, b: b as f32, tx: tx as f32, ty: ty as f32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point, tol: f32) -> bool {
        (a.x - b.x).abs() <= tol && (a.y - b.y).abs() <= tol
    }

    #[test]
    fn letterbox_round_trip_on_non_square_frames() {
        for &(sw, sh, dw, dh) in
            &[(640, 480, 640, 640), (1280, 720, 640, 640), (480, 640, 320, 320), (250, 100, 96, 64)]
        {
            let lb = Letterbox::fit(sw, sh, dw, dh);
            assert!(lb.inner_w <= dw && lb.inner_h <= dh);
            for p in [Point::new(0.0, 0.0), Point::new(sw as f32, sh as f32), Point::new(17.5, 3.25)] {
                let back = lb.to_frame(lb.to_input(p));
                assert!(close(back, p, 1e-3), "{sw}x{sh}->{dw}x{dh}: {p:?} came back as {back:?}");
            }
        }
    }

    #[test]
    fn letterbox_pads_the_short_axis_centred() {
        // 1280x720 into 640x640: scale 0.5, 640x360 inside, 140 px of padding above and below.
        let lb = Letterbox::fit(1280, 720, 640, 640);
        assert_eq!((lb.scale, lb.inner_w, lb.inner_h, lb.pad_x, lb.pad_y), (0.5, 640, 360, 0.0, 140.0));
        // The frame's centre maps to the input's centre, and a box maps back with the offset removed.
        assert_eq!(lb.to_input(Point::new(640.0, 360.0)), Point::new(320.0, 320.0));
        let r = lb.rect_to_frame(Rect { x: 10.0, y: 150.0, w: 20.0, h: 30.0 });
        assert_eq!(r, Rect { x: 20.0, y: 20.0, w: 40.0, h: 60.0 });
    }

    #[test]
    fn similarity_recovers_a_known_transform() {
        let t = Similarity { a: 0.8, b: 0.3, tx: 12.0, ty: -4.0 };
        let src = [
            Point::new(30.0, 40.0),
            Point::new(70.0, 41.0),
            Point::new(50.0, 60.0),
            Point::new(35.0, 80.0),
            Point::new(66.0, 79.0),
        ];
        let dst: Vec<Point> = src.iter().map(|p| t.apply(*p)).collect();
        let est = Similarity::estimate(&src, &dst).expect("well-posed");
        assert!((est.a - t.a).abs() < 1e-4 && (est.b - t.b).abs() < 1e-4);
        assert!((est.tx - t.tx).abs() < 1e-2 && (est.ty - t.ty).abs() < 1e-2);
        let inv = est.inverse().expect("invertible");
        for p in &src {
            assert!(close(inv.apply(est.apply(*p)), *p, 1e-3));
        }
        assert!((est.scale() - (0.8f32 * 0.8 + 0.3 * 0.3).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn similarity_rejects_degenerate_points() {
        let p = [Point::new(5.0, 5.0); 5];
        assert!(Similarity::estimate(&p, &p).is_none());
        let nan = [Point::new(f32::NAN, 1.0); 5];
        assert!(Similarity::estimate(&nan, &p).is_none());
    }

    #[test]
    fn iou_of_disjoint_identical_and_overlapping_boxes() {
        let a = Rect { x: 0.0, y: 0.0, w: 10.0, h: 10.0 };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect { x: 20.0, y: 0.0, w: 5.0, h: 5.0 }), 0.0);
        let b = Rect { x: 5.0, y: 0.0, w: 10.0, h: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
    }
}
