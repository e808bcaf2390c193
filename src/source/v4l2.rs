//! V4L2 cameras (feature `v4l2`), through the `v4l` crate: memory-mapped streaming, MJPEG or YUYV.
//! A dequeued buffer is only valid until the next dequeue, so each frame is converted (decoded or
//! colour-converted) straight out of it, which is the one copy. An unplugged camera fails the next
//! dequeue; the camera thread closes the source and reopens the device when it is back.
//!
//! Format choice: the configured `format` if the device offers it, else MJPEG when offered (less
//! USB bandwidth, higher resolutions), else YUYV. Only the pure conversions are tested on machines
//! without a video device.

use super::{FrameSource, PixelFormat, Pulled, SourceError};
use crate::config::CameraConfig;
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Duration;
use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

const MJPG: [u8; 4] = *b"MJPG";
const YUYV: [u8; 4] = *b"YUYV";

/// A V4L2 capture device.
pub struct V4l2Source {
    name: String,
    device: PathBuf,
    want: Option<PixelFormat>,
    size: Option<(u32, u32)>,
    fps: Option<u32>,
    running: Option<Running>,
}

struct Running {
    // Field order matters: the stream unmaps its buffers before the device closes.
    stream: Stream<'static>,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source").field("device", &self.device).field("open", &self.running.is_some()).finish()
    }
}

impl V4l2Source {
    pub fn new(camera: &CameraConfig, device: &Path) -> Self {
        Self {
            name: camera.name.clone(),
            device: device.to_owned(),
            want: camera.format,
            size: camera.width.zip(camera.height),
            fps: camera.fps,
            running: None,
        }
    }
}

/// Which format to ask for, given the fourccs the device offers.
pub fn choose_format(offered: &[[u8; 4]], want: Option<PixelFormat>) -> Option<PixelFormat> {
    let has = |f: PixelFormat| offered.contains(&fourcc(f));
    match want {
        Some(f) if has(f) => Some(f),
        Some(_) => None,
        None if has(PixelFormat::Mjpeg) => Some(PixelFormat::Mjpeg),
        None if has(PixelFormat::Yuyv) => Some(PixelFormat::Yuyv),
        None => None,
    }
}

fn fourcc(f: PixelFormat) -> [u8; 4] {
    match f {
        PixelFormat::Mjpeg => MJPG,
        PixelFormat::Yuyv => YUYV,
    }
}

/// YUYV 4:2:2 (BT.601, limited range) to RGB. `data` holds `height` rows of `stride` bytes.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage, String> {
    let row = width as usize * 2;
    if width == 0 || height == 0 || !width.is_multiple_of(2) {
        return Err(format!("YUYV frame {width}x{height}: the width must be even and non-zero"));
    }
    let need = stride * (height as usize - 1) + row;
    if stride < row || data.len() < need {
        return Err(format!("YUYV frame {width}x{height}: buffer of {} bytes is too small", data.len()));
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as usize {
        for px in data[y * stride..y * stride + row].chunks_exact(4) {
            let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
            out.extend_from_slice(&ycbcr(y0, u, v));
            out.extend_from_slice(&ycbcr(y1, u, v));
        }
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| "frame size mismatch".to_owned())
}

/// One BT.601 limited-range pixel, integer arithmetic (8-bit fixed point).
fn ycbcr(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [clamp(c + 409 * e), clamp(c - 100 * d - 208 * e), clamp(c + 516 * d)]
}

/// Decodes one MJPEG frame.
pub fn mjpeg_to_rgb(data: &[u8]) -> Result<RgbImage, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("MJPEG frame: not a JPEG (no start-of-image marker)".to_owned());
    }
    // A frame cut short (a USB hiccup) is refused rather than shown with a grey lower half; the
    // device's own resolution is the only size limit.
    let limits = super::images::ImageLimits { max_pixels: u64::from(u32::MAX) };
    super::images::decode(data, Path::new("MJPEG frame"), &limits).map_err(|e| crate::error_chain(&e))
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        format!("V4L2 {}", self.device.display())
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.close();
        let err = |message: String| SourceError::Open { source_name: self.name.clone(), message };
        let dev = Device::with_path(&self.device).map_err(|e| err(format!("{}: {e}", self.device.display())))?;
        let offered: Vec<[u8; 4]> =
            dev.enum_formats().map_err(|e| err(e.to_string()))?.iter().map(|f| f.fourcc.repr).collect();
        let format = choose_format(&offered, self.want).ok_or_else(|| {
            let names: Vec<String> = offered.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            err(format!("offers {} but neither MJPEG nor YUYV (or not the configured format)", names.join(", ")))
        })?;
        let mut fmt = dev.format().map_err(|e| err(e.to_string()))?;
        fmt.fourcc = FourCC::new(&fourcc(format));
        if let Some((w, h)) = self.size {
            (fmt.width, fmt.height) = (w, h);
        }
        let fmt = dev.set_format(&fmt).map_err(|e| err(e.to_string()))?;
        if fmt.fourcc.repr != fourcc(format) {
            return Err(err(format!("the device refused {format:?}")));
        }
        if let Some(fps) = self.fps {
            let params = v4l::video::capture::Parameters::with_fps(fps);
            if let Err(e) = dev.set_params(&params) {
                log::warn!("camera {}: cannot set {fps} fps: {e}", self.name);
            }
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, 4).map_err(|e| err(e.to_string()))?;
        stream.set_timeout(Duration::from_millis(500));
        log::info!("camera {}: {}x{} {format:?}", self.name, fmt.width, fmt.height);
        self.running = Some(Running { stream, _device: dev, format, width: fmt.width, height: fmt.height });
        Ok(())
    }

    fn pull(&mut self, _timeout: Duration) -> Result<Pulled, SourceError> {
        let name = self.name.clone();
        let Some(r) = self.running.as_mut() else {
            return Err(SourceError::Stream { source_name: name, message: "pulled before open".into() });
        };
        let (format, width, height) = (r.format, r.width, r.height);
        let (buf, meta) = match r.stream.next() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Pulled::Pending)
            }
            Err(e) => return Err(SourceError::Stream { source_name: name, message: e.to_string() }),
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..if used == 0 { buf.len() } else { used }];
        let image = match format {
            PixelFormat::Mjpeg => mjpeg_to_rgb(data),
            PixelFormat::Yuyv => yuyv_to_rgb(data, width, height, width as usize * 2),
        }
        .map_err(|message| SourceError::BadFrame { source_name: name, message })?;
        Ok(Pulled::Frame { picture: super::Picture::Rgb(image), pts: None })
    }

    fn close(&mut self) {
        self.running = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_black_white_and_red() {
        // Two pixels per 4 bytes: black + white (neutral chroma), then a BT.601 red.
        let data = [16, 128, 235, 128, 81, 90, 81, 240];
        let img = yuyv_to_rgb(&data, 2, 2, 4).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        let red = img.get_pixel(0, 1).0;
        assert!(red[0] >= 250 && red[1] <= 5 && red[2] <= 5, "{red:?}");
    }

    #[test]
    fn bad_yuyv_frames_are_refused_not_panicked_on() {
        assert!(yuyv_to_rgb(&[0; 8], 3, 1, 6).is_err(), "odd width");
        assert!(yuyv_to_rgb(&[0; 6], 2, 2, 4).is_err(), "short buffer");
        assert!(yuyv_to_rgb(&[], 0, 0, 0).is_err());
    }

    #[test]
    fn mjpeg_frames_decode_and_garbage_does_not() {
        let mut jpeg = Vec::new();
        RgbImage::from_pixel(16, 8, image::Rgb([200, 10, 10]))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let img = mjpeg_to_rgb(&jpeg).unwrap();
        assert_eq!(img.dimensions(), (16, 8));
        assert!(img.get_pixel(4, 4).0[0] > 150);
        assert!(mjpeg_to_rgb(b"garbage").is_err(), "garbage");
        assert!(mjpeg_to_rgb(&jpeg[..jpeg.len() / 2]).is_err(), "a truncated MJPEG frame is refused, not shown grey");
        assert!(mjpeg_to_rgb(&[]).is_err(), "an empty buffer");
    }

    #[test]
    fn format_choice_prefers_mjpeg_and_honours_the_config() {
        let both = [YUYV, MJPG];
        assert_eq!(choose_format(&both, None), Some(PixelFormat::Mjpeg));
        assert_eq!(choose_format(&both, Some(PixelFormat::Yuyv)), Some(PixelFormat::Yuyv));
        assert_eq!(choose_format(&[YUYV], None), Some(PixelFormat::Yuyv));
        assert_eq!(choose_format(&[YUYV], Some(PixelFormat::Mjpeg)), None);
        assert_eq!(choose_format(&[*b"NV12"], None), None);
    }

    /// Needs a camera: `cargo test --release -- --ignored a_real_device` on a box that has one.
    #[test]
    #[ignore = "needs a V4L2 device at /dev/video0 (none exists on the dev and CI machines)"]
    fn a_real_device_opens_and_delivers_frames() {
        let dev = Path::new("/dev/video0");
        assert!(dev.exists(), "no V4L2 device at {}", dev.display());
        let cam = CameraConfig::from_url("/dev/video0");
        let mut src = V4l2Source::new(&cam, dev);
        src.open().unwrap();
        let mut got = false;
        for _ in 0..20 {
            if let Pulled::Frame { picture: crate::source::Picture::Rgb(image), .. } =
                src.pull(Duration::from_millis(500)).unwrap()
            {
                assert!(image.width() > 0);
                got = true;
                break;
            }
        }
        assert!(got, "the device delivered no frame in 10 s");
    }
}
