//! Test videos made from real LFW photos, and a loopback RTSP server that streams them.
//! Frames are composed here (the photo pasted on a grey background, drifting), written as PNG and
//! encoded to H.264 MP4 by `gst-launch-1.0` (x264enc, from gstreamer1.0-plugins-ugly).

use image::{imageops, Rgb, RgbImage};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A video of `photo` appearing in `spans` (frame ranges), blank grey in between.
pub struct VideoSpec<'a> {
    pub photo: &'a Path,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: u32,
    /// Width the 250x250 LFW photo is scaled to (its face is about 40% of that).
    pub photo_px: u32,
    pub spans: &'a [std::ops::Range<u32>],
    /// Raw format x264enc encodes: `I420` (4:2:0, what cameras send) or `Y444` (High 4:4:4,
    /// which OpenH264 cannot decode).
    pub format: &'a str,
}

pub fn make_face_video(out: &Path, spec: &VideoSpec) -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let photo = image::open(spec.photo).unwrap().into_rgb8();
    let photo = imageops::resize(&photo, spec.photo_px, spec.photo_px, imageops::FilterType::Triangle);
    for i in 0..spec.frames {
        let mut frame = RgbImage::from_pixel(spec.width, spec.height, Rgb([110, 110, 110]));
        if spec.spans.iter().any(|r| r.contains(&i)) {
            let x = (spec.width / 4 + 2 * i) as i64;
            imageops::overlay(&mut frame, &photo, x, i64::from(spec.height / 6));
        }
        frame.save(dir.path().join(format!("f{i:05}.png"))).unwrap();
    }
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "multifilesrc"])
        .arg(format!("location={}/f%05d.png", dir.path().display()))
        .args(["index=0", &format!("caps=image/png,framerate={}/1", spec.fps), "!", "pngdec", "!", "videoconvert"])
        .args([
            "!",
            &format!("video/x-raw,format={}", spec.format),
            "!",
            "x264enc",
            "threads=1",
            "key-int-max=10",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", out.display()))
        .status()
        .expect("gst-launch-1.0 runs (install gstreamer1.0-tools: scripts/install-deps.sh)");
    assert!(status.success(), "encoding the test video failed (needs gstreamer1.0-plugins-ugly for x264enc)");
    out.to_owned()
}

pub use crate::common::free_port;

/// `tests/fixtures/rtsp_server.py` serving a file; killed on drop.
pub struct RtspServer {
    child: Child,
    pub url: String,
}

impl RtspServer {
    pub fn start(port: u16, file: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([&port.to_string(), "face"])
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 runs (Debian python3-gi, gir1.2-gst-rtsp-server-1.0: scripts/install-deps.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the RTSP server did not start (python3-gi, gir1.2-gst-rtsp-server-1.0?)");
        Self { child, url: format!("rtsp://127.0.0.1:{port}/face") }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
