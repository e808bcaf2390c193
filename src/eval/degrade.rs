//! Random camera-like degradation for `farsight eval-fusion`: each frame of a probe track is its
//! own draw of alignment jitter (crop mode; in frame mode the detector's landmarks are the
//! jitter), pixel-grid phase (frame mode), optical blur, a resize kernel, sensor noise and JPEG.
//! The draw is pure data made from a seed, so a frame is reproducible and can be cached.

use super::probe::LabelledFace;
use crate::align::{downsample, Alignment, ALIGNED_SIZE};
use crate::geometry::Point;
use image::{imageops::FilterType, RgbImage};

/// SplitMix64: a seeded generator (the crate has no `rand`).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    /// A uniformly random index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A stable 64-bit hash of strings and numbers (FNV-1a): seeds that do not depend on the order
/// in which images are processed, nor on the Rust version.
pub fn seed_of(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// How a frame is shrunk to the probe size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// `farsight eval`'s own: the exact area average (crop mode), the antialiased triangle (frame).
    Eval,
    Triangle,
    CatmullRom,
    Lanczos3,
    Gaussian,
    /// Point sampling: aliased, as a camera that skips lines.
    Nearest,
}

/// One frame's degradation.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// Crop mode: landmark error, shrunk pixels per axis (N(0, 0.5)).
    pub shift: (f32, f32),
    /// Crop mode: landmark rotation, degrees (N(0, 3)).
    pub rotation_deg: f32,
    /// Crop mode: landmark scale error, log (N(0, 0.04)).
    pub log_scale: f32,
    /// Frame mode: where the face falls on the pixel grid, shrunk pixels (U(0, 1) per axis).
    pub phase: (f32, f32),
    /// Optical blur before the shrink, sigma in shrunk pixels; 0: none (half the draws).
    pub blur: f32,
    pub kernel: Kernel,
    /// Sensor noise, grey levels sd; 0: none (half the draws).
    pub noise: f32,
    /// JPEG quality, `None` for none (half the draws).
    pub jpeg: Option<u8>,
    noise_seed: u64,
}

/// The distribution of a draw, in words (reports quote it).
pub const DESCRIPTION: &str = "per frame: crop mode landmarks off by N(0, 0.5) shrunk px per axis, N(0, 3) degrees, \
     log-scale N(0, 0.04); frame mode a random pixel-grid phase (the detector's own landmarks); then, each with \
     chance 1/2, Gaussian blur sigma U(0.3, 1.0) shrunk px; a resize kernel (eval's own 0.3, triangle 0.2, \
     catmull-rom 0.15, lanczos3 0.15, gaussian 0.1, nearest 0.1); with chance 1/2 noise sd U(1, 5) grey levels; \
     with chance 1/2 JPEG quality 50-90";

impl Draw {
    pub fn sample(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let shift = (0.5 * r.normal(), 0.5 * r.normal());
        let rotation_deg = 3.0 * r.normal();
        let log_scale = 0.04 * r.normal();
        let phase = (r.unit(), r.unit());
        let blur = if r.unit() < 0.5 { r.uniform(0.3, 1.0) } else { 0.0 };
        let k = r.unit();
        let kernel = match k {
            k if k < 0.30 => Kernel::Eval,
            k if k < 0.50 => Kernel::Triangle,
            k if k < 0.65 => Kernel::CatmullRom,
            k if k < 0.80 => Kernel::Lanczos3,
            k if k < 0.90 => Kernel::Gaussian,
            _ => Kernel::Nearest,
        };
        let noise = if r.unit() < 0.5 { r.uniform(1.0, 5.0) } else { 0.0 };
        let jpeg = if r.unit() < 0.5 { Some(50 + r.below(41) as u8) } else { None };
        Self { shift, rotation_deg, log_scale, phase, blur, kernel, noise, jpeg, noise_seed: r.next_u64() }
    }

    /// Blur and shrink `src` to `w` x `h` (`scale`: shrunk pixels per source pixel); `crop`:
    /// an aligned face (eval's kernel is then the area average).
    pub fn shrink(&self, src: &RgbImage, w: u32, h: u32, scale: f32, crop: bool) -> RgbImage {
        let blurred;
        let src = if self.blur > 0.0 && scale < 1.0 {
            blurred = image::imageops::blur(src, self.blur / scale);
            &blurred
        } else {
            src
        };
        let filter = match self.kernel {
            Kernel::Eval if crop && w == h => return downsample(src, w),
            Kernel::Eval | Kernel::Triangle => FilterType::Triangle,
            Kernel::CatmullRom => FilterType::CatmullRom,
            Kernel::Lanczos3 => FilterType::Lanczos3,
            Kernel::Gaussian => FilterType::Gaussian,
            Kernel::Nearest => FilterType::Nearest,
        };
        if (w, h) == src.dimensions() {
            return src.clone();
        }
        image::imageops::resize(src, w, h, filter)
    }

    /// Sensor noise and JPEG on the shrunk image.
    pub fn sensor(&self, mut img: RgbImage) -> RgbImage {
        if self.noise > 0.0 {
            let mut r = Rng::new(self.noise_seed);
            for c in img.as_mut().iter_mut() {
                *c = (f32::from(*c) + self.noise * r.normal()).round().clamp(0.0, 255.0) as u8;
            }
        }
        if let Some(q) = self.jpeg {
            let mut buf = Vec::new();
            let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q).encode_image(&img);
            if let Ok(decoded) =
                encoded.and_then(|()| image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg))
            {
                img = decoded.to_rgb8();
            }
        }
        img
    }

    /// Crop mode: the labelled face aligned with this draw's landmark error, blurred, shrunk to
    /// `size` x `size` and put through the sensor. `None` for degenerate landmarks.
    pub fn crop(&self, img: &RgbImage, face: &LabelledFace, size: u32) -> Option<RgbImage> {
        let native = Alignment::from_landmarks(&face.landmarks)?.native_size();
        let px = native / size as f32; // source pixels per shrunk pixel
        let n = face.landmarks.len() as f32;
        let c = face.landmarks.iter().fold(Point::default(), |a, p| Point::new(a.x + p.x / n, a.y + p.y / n));
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let s = self.log_scale.exp();
        let lm = face.landmarks.map(|p| {
            let (dx, dy) = (p.x - c.x, p.y - c.y);
            Point::new(
                c.x + s * (cos * dx - sin * dy) + self.shift.0 * px,
                c.y + s * (sin * dx + cos * dy) + self.shift.1 * px,
            )
        });
        let aligned = Alignment::from_landmarks(&lm)?.warp(img, ALIGNED_SIZE)?;
        let low = self.shrink(&aligned, size, size, size as f32 / ALIGNED_SIZE as f32, true);
        Some(self.sensor(low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_differ_between_seeds() {
        assert_eq!(Draw::sample(7), Draw::sample(7));
        assert_ne!(Draw::sample(7), Draw::sample(8));
        let mut r = Rng::new(1);
        let xs: Vec<f32> = (0..10_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
    }

    #[test]
    fn seeds_depend_on_every_part() {
        assert_eq!(seed_of(&[b"a", b"bc"]), seed_of(&[b"a", b"bc"]));
        assert_ne!(seed_of(&[b"a", b"bc"]), seed_of(&[b"ab", b"c"]));
    }

    #[test]
    fn a_draw_without_degradation_is_evals_crop_downsample() {
        let img = RgbImage::from_fn(200, 200, |x, y| image::Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, 90]));
        let lm = crate::align::TEMPLATE.map(|p| Point::new(p.x + 40.0, p.y + 30.0));
        let face = LabelledFace { landmarks: lm, rect: Default::default(), score: 0.9, detected: true };
        let clean = Draw {
            shift: (0.0, 0.0),
            rotation_deg: 0.0,
            log_scale: 0.0,
            phase: (0.0, 0.0),
            blur: 0.0,
            kernel: Kernel::Eval,
            noise: 0.0,
            jpeg: None,
            noise_seed: 0,
        };
        let aligned = Alignment::from_landmarks(&lm).unwrap().warp(&img, ALIGNED_SIZE).unwrap();
        assert_eq!(clean.crop(&img, &face, 14).unwrap(), downsample(&aligned, 14));
    }

    #[test]
    fn a_crop_draw_makes_a_probe_of_the_asked_size() {
        let img = RgbImage::from_fn(200, 200, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let lm = crate::align::TEMPLATE.map(|p| Point::new(p.x + 40.0, p.y + 40.0));
        let face = LabelledFace { landmarks: lm, rect: Default::default(), score: 0.9, detected: true };
        for seed in 0..20 {
            let low = Draw::sample(seed).crop(&img, &face, 14).unwrap();
            assert_eq!(low.dimensions(), (14, 14));
        }
    }
}
