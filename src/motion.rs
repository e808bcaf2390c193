//! The motion stage: decides, from a cheap look at each frame, where the detector needs to look.
//! Each camera keeps a background model on a coarse grid (the frame averaged in cells so that the
//! longer side has at most [`GRID`] cells; a 1920x1080 frame is 160x90 cells of 12x12 pixels, read
//! at every other pixel): a running average per cell. A cell whose brightness differs from its
//! background by more than the sensitivity's threshold, once a uniform change of the whole frame's
//! brightness is taken out (a cloud, auto-exposure), is moving. Moving cells outside the ignore
//! zones are grown by one cell, grouped into connected regions, and each region is returned as a
//! box in frame pixels with a margin. A change over most of the frame (lights switched, the camera
//! knocked) resets the background and asks for a full scan instead. Costs about 1 ms a 1080p frame
//! here; a static scene yields no region and costs nothing downstream.

use crate::geometry::Rect;
use crate::source::Luma;
use serde::{Deserialize, Serialize};

/// Cells along the longer side of the grid, at most.
pub const GRID: u32 = 160;

/// `[camera.motion]`: the motion stage of one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Off: every frame is scanned whole (the detector runs on the full frame, tiled at native
    /// resolution), as a camera whose view is always busy would need. Image-folder cameras (a
    /// series of stills) are always scanned whole.
    pub enabled: bool,
    /// 0 (only large, strong changes) to 1 (the faintest changes): maps to a brightness
    /// threshold from 28 down to 4 grey levels per cell.
    pub sensitivity: f32,
    /// Parts of the view to ignore (a timestamp overlay, a road, trees in the wind), each
    /// `[x, y, w, h]` as fractions of the frame's width and height.
    pub ignore: Vec<[f32; 4]>,
    /// Stream seconds between full scans of the whole frame (someone who was already standing
    /// still when the camera started, or who stopped moving before being seen).
    pub scan_every_s: f32,
    /// Seconds over which the background follows slow changes (running-average time constant).
    pub background_s: f32,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self { enabled: true, sensitivity: 0.5, ignore: Vec::new(), scan_every_s: 30.0, background_s: 3.0 }
    }
}

impl MotionConfig {
    /// Every problem, prefixed with `at` (the camera).
    pub fn validate(&self, at: &str, p: &mut Vec<String>) {
        if !(0.0..=1.0).contains(&self.sensitivity) {
            p.push(format!("{at}: motion.sensitivity = {} must be between 0 and 1", self.sensitivity));
        }
        for z in &self.ignore {
            let ok = z.iter().all(|v| (0.0..=1.0).contains(v)) && z[2] > 0.0 && z[3] > 0.0;
            if !ok {
                p.push(format!("{at}: motion.ignore zone {z:?} must be [x, y, w, h] fractions in [0, 1]"));
            }
        }
        if !(self.scan_every_s >= 0.5 && self.scan_every_s <= 86_400.0) {
            p.push(format!("{at}: motion.scan_every_s = {} must be between 0.5 and 86400", self.scan_every_s));
        }
        if !(self.background_s >= 0.1 && self.background_s <= 3600.0) {
            p.push(format!("{at}: motion.background_s = {} must be between 0.1 and 3600", self.background_s));
        }
    }

    fn threshold(&self) -> f32 {
        4.0 + 24.0 * (1.0 - self.sensitivity.clamp(0.0, 1.0))
    }
}

/// What the motion stage saw in one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MotionOutcome {
    /// Moving parts of the frame, in frame pixels, margins included.
    pub regions: Vec<Rect>,
    /// The whole frame should be scanned: the first frame, a change over most of the frame, or
    /// `scan_every_s` since the last scan.
    pub scan: bool,
}

/// One camera's background model.
#[derive(Debug)]
pub struct Motion {
    config: MotionConfig,
    /// Frame size the grid was made for (a camera that changes resolution starts over).
    frame: (u32, u32),
    cell: u32,
    grid: (usize, usize),
    background: Vec<f32>,
    ignored: Vec<bool>,
    last_scan: Option<f64>,
    last_ts: Option<f64>,
}

impl Motion {
    pub fn new(config: MotionConfig) -> Self {
        Self {
            config,
            frame: (0, 0),
            cell: 1,
            grid: (0, 0),
            background: Vec::new(),
            ignored: Vec::new(),
            last_scan: None,
            last_ts: None,
        }
    }

    /// Looks at one frame taken at stream time `ts` (seconds).
    pub fn update<'a>(&mut self, frame: impl Into<Luma<'a>>, ts: f64) -> MotionOutcome {
        let frame = frame.into();
        let (w, h) = match frame {
            Luma::Rgb(image) => image.dimensions(),
            Luma::Plane { width, height, .. } => (width, height),
        };
        if w == 0 || h == 0 {
            return MotionOutcome::default();
        }
        let periodic = self.last_scan.is_none_or(|t| ts - t >= f64::from(self.config.scan_every_s) || ts < t);
        if !self.config.enabled {
            self.last_scan = Some(ts);
            return MotionOutcome { regions: Vec::new(), scan: true };
        }
        let cells = self.sample(frame, w, h);
        let first = (w, h) != self.frame;
        if first {
            self.reset_grid(w, h, cells);
            self.last_scan = Some(ts);
            self.last_ts = Some(ts);
            return MotionOutcome { regions: Vec::new(), scan: true };
        }
        let dt = self.last_ts.map_or(0.1, |t| (ts - t).clamp(0.0, 10.0)).max(0.01);
        self.last_ts = Some(ts);
        // Take out a uniform brightness change, then threshold.
        let n = cells.len() as f32;
        let shift = (cells.iter().sum::<f32>() - self.background.iter().sum::<f32>()) / n;
        let thr = self.config.threshold();
        let mut moving: Vec<bool> = cells
            .iter()
            .zip(&self.background)
            .zip(&self.ignored)
            .map(|((c, b), &ignored)| !ignored && (c - b - shift).abs() > thr)
            .collect();
        let alpha = (dt / f64::from(self.config.background_s)).min(1.0) as f32;
        for (b, c) in self.background.iter_mut().zip(&cells) {
            *b += alpha * (c - *b);
        }
        let busy = moving.iter().filter(|&&m| m).count() as f32 / n;
        if busy > 0.4 {
            // The whole view changed: start the background again and look everywhere.
            self.background = cells;
            self.last_scan = Some(ts);
            return MotionOutcome { regions: Vec::new(), scan: true };
        }
        if periodic {
            self.last_scan = Some(ts);
        }
        dilate(&mut moving, self.grid);
        MotionOutcome { regions: self.regions(&moving), scan: periodic }
    }

    fn reset_grid(&mut self, w: u32, h: u32, cells: Vec<f32>) {
        let (gw, gh) = self.grid;
        self.frame = (w, h);
        self.ignored = (0..gh)
            .flat_map(|y| (0..gw).map(move |x| (x, y)))
            .map(|(x, y)| {
                let (fx, fy) = ((x as f32 + 0.5) / gw as f32, (y as f32 + 0.5) / gh as f32);
                self.config.ignore.iter().any(|z| fx >= z[0] && fx < z[0] + z[2] && fy >= z[1] && fy < z[1] + z[3])
            })
            .collect();
        self.background = cells;
    }

    /// Mean brightness of each cell (every other pixel of every other row), sizing the grid for
    /// this frame first.
    fn sample(&mut self, frame: Luma<'_>, w: u32, h: u32) -> Vec<f32> {
        let cell = w.max(h).div_ceil(GRID).max(1);
        let (gw, gh) = (w.div_ceil(cell) as usize, h.div_ceil(cell) as usize);
        if (w, h) != self.frame {
            self.cell = cell;
            self.grid = (gw, gh);
        }
        let step = if cell >= 4 { 2 } else { 1 };
        let mut sum = vec![0u32; gw * gh];
        let mut count = vec![0u32; gw * gh];
        let mut scale: fn(f32) -> f32 = |v| v;
        match frame {
            Luma::Rgb(image) => {
                let raw = image.as_raw();
                for y in (0..h).step_by(step) {
                    let line = &raw[(y * w * 3) as usize..((y + 1) * w * 3) as usize];
                    let samples =
                        line.chunks_exact(3).step_by(step).zip((0..w).step_by(step)).map(|(p, x)| {
                            (x, (77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2])) >> 8)
                        });
                    add_row(&mut sum, &mut count, (y / cell) as usize * gw, cell, samples);
                }
            }
            Luma::Plane { data, stride, limited, .. } => {
                for y in (0..h).step_by(step) {
                    let start = y as usize * stride;
                    // A short buffer (never seen from GStreamer) leaves the missing rows unsampled.
                    let Some(line) = data.get(start..start + w as usize) else { break };
                    let samples = line.iter().step_by(step).zip((0..w).step_by(step)).map(|(&v, x)| (x, u32::from(v)));
                    add_row(&mut sum, &mut count, (y / cell) as usize * gw, cell, samples);
                }
                if limited {
                    // Video luma spans 16-235: stretch it to the 0-255 that RGB brightness spans.
                    scale = |v: f32| (v - 16.0) * (255.0 / 219.0);
                }
            }
        }
        sum.iter().zip(&count).map(|(&s, &c)| scale(s as f32 / c.max(1) as f32)).collect()
    }

    /// Connected groups of moving cells as frame-pixel boxes with a margin (a quarter of the
    /// box's size, at least two cells), clamped to the frame.
    fn regions(&self, moving: &[bool]) -> Vec<Rect> {
        let (gw, gh) = self.grid;
        let mut seen = vec![false; moving.len()];
        let mut out = Vec::new();
        let mut stack = Vec::new();
        for start in 0..moving.len() {
            if !moving[start] || seen[start] {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1) = (gw, gh, 0, 0);
            let mut size = 0;
            seen[start] = true;
            stack.push(start);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % gw, i / gw);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                size += 1;
                let mut visit = |j: usize| {
                    if moving[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < gw {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - gw);
                }
                if y + 1 < gh {
                    visit(i + gw);
                }
            }
            // A lone cell grown by the dilation is 9 cells: smaller groups are noise.
            if size < 12 {
                continue;
            }
            let c = self.cell as f32;
            let (fw, fh) = (self.frame.0 as f32, self.frame.1 as f32);
            let (rx0, ry0) = (x0 as f32 * c, y0 as f32 * c);
            let (rx1, ry1) = (((x1 + 1) as f32 * c).min(fw), ((y1 + 1) as f32 * c).min(fh));
            let mx = ((rx1 - rx0) * 0.25).max(2.0 * c);
            let my = ((ry1 - ry0) * 0.25).max(2.0 * c);
            out.push(Rect::from_corners(
                (rx0 - mx).max(0.0),
                (ry0 - my).max(0.0),
                (rx1 + mx).min(fw),
                (ry1 + my).min(fh),
            ));
        }
        out
    }
}

/// Grows the moving cells by one cell in every direction (3x3), joining a moving person's parts.
fn dilate(mask: &mut [bool], (gw, gh): (usize, usize)) {
    let src = mask.to_vec();
    for y in 0..gh {
        for x in 0..gw {
            if src[y * gw + x] {
                continue;
            }
            let near = (y.saturating_sub(1)..(y + 2).min(gh))
                .any(|yy| (x.saturating_sub(1)..(x + 2).min(gw)).any(|xx| src[yy * gw + xx]));
            mask[y * gw + x] = near;
        }
    }
}

/// Adds one row's `(x, brightness)` samples to the cells of grid row `row` (its first index).
/// Generic, not `dyn`: it runs for every sampled pixel of every frame.
fn add_row(sum: &mut [u32], count: &mut [u32], row: usize, cell: u32, samples: impl Iterator<Item = (u32, u32)>) {
    for (x, luma) in samples {
        let i = row + (x / cell) as usize;
        sum[i] += luma;
        count[i] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A video-range Y plane (BT.601, 16-235) of `img`, rows padded to a multiple of 64 bytes.
    fn y_plane(img: &RgbImage) -> (Vec<u8>, usize) {
        let stride = (img.width() as usize).div_ceil(64) * 64;
        let mut data = vec![0u8; stride * img.height() as usize];
        for (x, y, p) in img.enumerate_pixels() {
            let l = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
            data[y as usize * stride + x as usize] = (16.0 + l * 219.0 / 255.0).round() as u8;
        }
        (data, stride)
    }

    /// A textured background (so a uniform brightness shift is not a trivial case).
    fn background(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = 90 + ((x / 7 + y / 5) % 9) as u8 * 8;
            Rgb([v, v.wrapping_add(10), v.wrapping_sub(10)])
        })
    }

    fn with_person(mut img: RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
        for yy in y..y + h {
            for xx in x..x + w {
                img.put_pixel(xx, yy, Rgb([230, 190, 160]));
            }
        }
        img
    }

    #[test]
    fn a_video_y_plane_finds_the_same_person_as_its_rgb_frame() {
        let bg = background(1280, 720);
        let person = with_person(bg.clone(), 900, 300, 20, 90);
        let (mut from_rgb, mut from_y) = (Motion::new(MotionConfig::default()), Motion::new(MotionConfig::default()));
        for (i, img) in [&bg, &bg, &bg, &person].into_iter().enumerate() {
            let ts = i as f64 * 0.1;
            let (data, stride) = y_plane(img);
            let plane = Luma::Plane { data: &data, width: 1280, height: 720, stride, limited: true };
            let (a, b) = (from_rgb.update(img, ts), from_y.update(plane, ts));
            assert_eq!(a.scan, b.scan, "frame {i}");
            assert_eq!(a.regions, b.regions, "frame {i}: the Y plane sees what RGB sees");
        }
        // A plane shorter than it claims is sampled as far as it goes, never read past its end.
        let (data, stride) = y_plane(&person);
        let short = Luma::Plane { data: &data[..stride * 100], width: 1280, height: 720, stride, limited: true };
        let _ = from_y.update(short, 0.5);
    }

    #[test]
    fn a_static_scene_yields_nothing_and_a_person_yields_a_region_around_them() {
        let mut m = Motion::new(MotionConfig::default());
        let bg = background(1920, 1080);
        assert!(m.update(&bg, 0.0).scan, "the first frame is scanned whole");
        for i in 1..30 {
            let out = m.update(&bg, f64::from(i) * 0.1);
            assert!(out.regions.is_empty() && !out.scan, "frame {i}: {out:?}");
        }
        // A small person far away: 20x90 px (a 12-14 px face).
        let out = m.update(&with_person(bg.clone(), 1400, 600, 20, 90), 3.0);
        assert_eq!(out.regions.len(), 1, "{out:?}");
        let r = out.regions[0];
        assert!(r.x <= 1400.0 && r.y <= 600.0 && r.x + r.w >= 1420.0 && r.y + r.h >= 690.0, "{r:?}");
        assert!(r.w < 200.0 && r.h < 300.0, "a small region for a small person: {r:?}");
    }

    #[test]
    fn a_uniform_change_of_light_is_not_motion_and_a_light_switch_asks_for_a_scan() {
        let mut m = Motion::new(MotionConfig::default());
        let bg = background(640, 480);
        m.update(&bg, 0.0);
        let brighter = RgbImage::from_fn(640, 480, |x, y| {
            let p = bg.get_pixel(x, y).0;
            Rgb(p.map(|v| v.saturating_add(12)))
        });
        let out = m.update(&brighter, 0.1);
        assert!(out.regions.is_empty() && !out.scan, "{out:?}");
        let noise = RgbImage::from_fn(640, 480, |x, y| Rgb([((x * 31 + y * 17) % 256) as u8; 3]));
        let out = m.update(&noise, 0.2);
        assert!(out.scan && out.regions.is_empty(), "{out:?}");
    }

    #[test]
    fn ignored_zones_and_the_periodic_scan() {
        let config = MotionConfig { ignore: vec![[0.0, 0.0, 1.0, 0.1]], scan_every_s: 5.0, ..Default::default() };
        let mut m = Motion::new(config);
        let bg = background(640, 480);
        m.update(&bg, 0.0);
        // A clock overlay changing in the top strip is ignored.
        let out = m.update(&with_person(bg.clone(), 10, 5, 120, 30), 1.0);
        assert!(out.regions.is_empty(), "{out:?}");
        assert!(m.update(&bg, 6.0).scan, "a full scan every scan_every_s");
        assert!(!m.update(&bg, 6.1).scan);
        let mut bad = Vec::new();
        MotionConfig { sensitivity: 2.0, ignore: vec![[0.5, 0.5, 0.0, 1.0]], ..Default::default() }
            .validate("cam", &mut bad);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }
}
