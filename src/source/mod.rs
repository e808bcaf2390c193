//! Frame sources: every camera is a [`FrameSource`]. [`images`] reads a file or a folder of images
//! as one camera's frames; `gst` (feature `gst`) reads RTSP cameras and video files through
//! GStreamer; `v4l2` (feature `v4l2`) reads V4L2 devices. [`SourceSpec`] turns a camera's `url`
//! into the source that serves it; the pipeline's camera thread opens it, pulls frames, and on any
//! error closes it and reopens it with backoff (a failing camera never ends the process).

#[cfg(feature = "gst")]
pub mod gst;
pub mod images;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What a source yields when asked for a frame.
#[derive(Debug)]
pub enum Pulled {
    /// A decoded frame, with its presentation time when the stream has one (video files).
    Frame { picture: Picture, pts: Option<Duration> },
    /// Nothing arrived within the timeout; ask again (the caller checks for shutdown in between).
    Pending,
    /// A finite source (video file, image folder) has no more frames.
    End,
}

/// A decoded frame as its source delivered it. The camera thread shows every frame to the motion
/// stage through [`Picture::luma`] and makes RGB pixels ([`Picture::into_rgb`]) only for frames
/// the workers will search: in a static scene most video frames never leave the decoder's YUV.
// `Yuv` is boxed: GStreamer's mapped-frame descriptor (plane pointers, strides, info) is ~670
// bytes, the pixels stay in its buffer; one small allocation per frame.
#[derive(Debug)]
pub enum Picture {
    /// Packed RGB (image files, V4L2 cameras).
    Rgb(RgbImage),
    /// A frame still in the decoder's YUV 4:2:0 (GStreamer sources).
    #[cfg(feature = "gst")]
    Yuv(Box<gst::YuvFrame>),
}

impl Picture {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Picture::Rgb(image) => image.dimensions(),
            #[cfg(feature = "gst")]
            Picture::Yuv(frame) => frame.dimensions(),
        }
    }

    /// The frame's brightness, as the motion stage reads it.
    pub fn luma(&self) -> Luma<'_> {
        match self {
            Picture::Rgb(image) => Luma::Rgb(image),
            #[cfg(feature = "gst")]
            Picture::Yuv(frame) => frame.luma(),
        }
    }

    /// The frame as packed RGB (a conversion for YUV frames; `Err` says why it failed).
    pub fn into_rgb(self) -> Result<RgbImage, String> {
        match self {
            Picture::Rgb(image) => Ok(image),
            #[cfg(feature = "gst")]
            Picture::Yuv(frame) => frame.into_rgb(),
        }
    }
}

/// A frame's brightness: RGB pixels (brightness is computed from them), or a luma plane.
#[derive(Debug, Clone, Copy)]
pub enum Luma<'a> {
    Rgb(&'a RgbImage),
    /// 8-bit luma rows of `stride` bytes. `limited` is true for video's 16-235 range (then values
    /// are stretched to 0-255, so motion thresholds mean the same on both kinds of source).
    Plane {
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        limited: bool,
    },
}

impl<'a> From<&'a RgbImage> for Luma<'a> {
    fn from(image: &'a RgbImage) -> Self {
        Luma::Rgb(image)
    }
}

/// A camera, video file or image sequence.
pub trait FrameSource: Send {
    /// What this source reads, for logs (never includes credentials).
    fn describe(&self) -> String;
    /// Opens the device or stream; called again after any error (reconnect).
    fn open(&mut self) -> Result<(), SourceError>;
    /// The next frame, waiting at most `timeout`.
    fn pull(&mut self, timeout: Duration) -> Result<Pulled, SourceError>;
    /// Releases the device or stream (also before a reopen). Must be safe to call twice.
    fn close(&mut self);
}

/// Why a source failed. Every variant is retried by the camera thread, except that a missing
/// file or an unsupported URL fails the configuration check before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: cannot open: {message}")]
    Open { source_name: String, message: String },
    #[error("{source_name}: stream error: {message}")]
    Stream { source_name: String, message: String },
    #[error("{source_name}: bad frame: {message}")]
    BadFrame { source_name: String, message: String },
    #[error("{source_name}: feature `{feature}` is not compiled into this farsight")]
    NotCompiled { source_name: String, feature: &'static str },
    #[error(transparent)]
    Image(#[from] images::ImageError),
}

/// Pixel formats a V4L2 camera can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

/// Which H.264 decoder RTSP streams and video files get (`pipeline.h264_decoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum H264Decoder {
    /// Cisco's OpenH264 (`openh264dec`, gst-plugins-bad) ranked above libav's `avdec_h264`: the
    /// same pixels (H.264 decoding is exact) from one small library, where gst-libav maps ~180
    /// (libavfilter and everything it links), 30 MiB of a 640x480 run's RSS. Hardware decoders
    /// GStreamer ranks above libav are still tried first; a stream OpenH264 cannot decode (4:4:4,
    /// 10-bit), or a box without the plugin, gets libav.
    #[default]
    Openh264,
    /// GStreamer's own ranking: a hardware decoder, else libav.
    Auto,
}

/// Where a camera's frames come from, parsed from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `v4l2:///dev/video0` or a bare `/dev/videoN` path.
    V4l2 { device: PathBuf },
    /// `rtsp://` or `rtsps://` camera (credentials may be in the URL).
    Rtsp { url: String },
    /// A video file (`file:///...`, or a path that is not an image or folder).
    Video { path: PathBuf },
    /// One image file, or a folder of images read in name order.
    Images { path: PathBuf },
    /// `test://stall`: a diagnostic camera that delivers one grey frame and then never returns
    /// from its source, as a hung driver would: for checking that a box's watchdog restarts
    /// farsight (`service.stall_after_s`, the unit's `WatchdogSec=`).
    Stall,
}

impl SourceSpec {
    /// Parses a camera URL. Pure: does not look at the file system beyond telling a folder or an
    /// image file from a video file by its extension.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("v4l2://") {
            return if rest.starts_with('/') {
                Ok(Self::V4l2 { device: PathBuf::from(rest) })
            } else {
                Err(format!("{url}: a V4L2 url is v4l2:///dev/videoN"))
            };
        }
        if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
            check_authority(url)?;
            return Ok(Self::Rtsp { url: url.to_owned() });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("{url}: a file url needs an absolute path (file:///...)"));
            }
            return Ok(Self::classify_path(PathBuf::from(path)));
        }
        if url == "test://stall" {
            return Ok(Self::Stall);
        }
        if url.contains("://") {
            let shown = redact_url(url);
            return Err(format!("{shown}: unsupported url scheme (use rtsp://, file://, v4l2:// or a path)"));
        }
        if url.is_empty() {
            return Err("empty camera url".to_owned());
        }
        if url.starts_with("/dev/video") {
            return Ok(Self::V4l2 { device: PathBuf::from(url) });
        }
        Ok(Self::classify_path(PathBuf::from(url)))
    }

    /// The source for a file system path given as such (not as a url): a device node, an image
    /// or folder of images, or a video file.
    pub fn from_path(path: PathBuf) -> Self {
        if path.starts_with("/dev") && path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("video")) {
            return Self::V4l2 { device: path };
        }
        Self::classify_path(path)
    }

    fn classify_path(path: PathBuf) -> Self {
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| images::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image || path.is_dir() {
            Self::Images { path }
        } else {
            Self::Video { path }
        }
    }

    /// Live sources (cameras) drop the oldest frame when the pipeline is behind and reconnect when
    /// they end; finite ones (files, images) block the reader instead and end at their last frame.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::V4l2 { .. } | Self::Rtsp { .. } | Self::Stall)
    }
}

/// The source that reads `camera` (not opened yet: the camera thread opens it, and reopens it
/// after errors).
pub fn open_source(
    camera: &crate::config::CameraConfig,
    limits: &images::ImageLimits,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let spec = camera.spec().map_err(|message| SourceError::Open { source_name: camera.name.clone(), message })?;
    match spec {
        SourceSpec::Stall => Ok(Box::new(StallSource { delivered: false })),
        SourceSpec::Images { path } => {
            Ok(Box::new(images::ImagesSource::new(&path, Duration::from_millis(camera.frame_interval_ms), *limits)))
        }
        #[cfg(feature = "gst")]
        SourceSpec::Rtsp { .. } | SourceSpec::Video { .. } => Ok(Box::new(gst::GstSource::new(camera, &spec)?)),
        #[cfg(not(feature = "gst"))]
        SourceSpec::Rtsp { .. } | SourceSpec::Video { .. } => {
            Err(SourceError::NotCompiled { source_name: camera.name.clone(), feature: "gst" })
        }
        #[cfg(feature = "v4l2")]
        SourceSpec::V4l2 { device } => Ok(Box::new(v4l2::V4l2Source::new(camera, &device))),
        #[cfg(not(feature = "v4l2"))]
        SourceSpec::V4l2 { .. } => Err(SourceError::NotCompiled { source_name: camera.name.clone(), feature: "v4l2" }),
    }
}

/// See [`SourceSpec::Stall`].
#[derive(Debug)]
struct StallSource {
    delivered: bool,
}

impl FrameSource for StallSource {
    fn describe(&self) -> String {
        "test://stall (one frame, then a source that never returns)".to_owned()
    }

    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn pull(&mut self, _timeout: Duration) -> Result<Pulled, SourceError> {
        if !self.delivered {
            self.delivered = true;
            let image = RgbImage::from_pixel(320, 240, image::Rgb([128; 3]));
            return Ok(Pulled::Frame { picture: Picture::Rgb(image), pts: None });
        }
        loop {
            std::thread::park();
        }
    }

    fn close(&mut self) {}
}

/// `rtsp://user:secret@host/...` → `rtsp://user:***@host/...`, for logs, messages and events
/// (any scheme: a webhook or MQTT url can carry a password too). Anything else is left as is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = userinfo.split(':').next().unwrap_or("");
    let path = path.map(|p| format!("/{p}")).unwrap_or_default();
    format!("{scheme}://{user}:***@{host}{path}")
}

/// [`redact_url`] applied to every `scheme://user:password@` inside a longer text (an error
/// message from GStreamer or an HTTP client that quotes the url).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; a password hides before its '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                out.push_str(userinfo.split(':').next().unwrap_or(""));
                out.push_str(":***@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Checks that a `scheme://[user[:password]@]host[:port][/path]` url names a host and, when it
/// gives a port, a port from 1 to 65535. The message never repeats a password.
pub fn check_authority(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let Some((_, rest)) = url.split_once("://") else { return Err(format!("{shown}: not a url (scheme://host/...)")) };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{shown}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown}: the url names no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("{shown}: the host may not contain spaces or control characters"));
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => return Err(format!("{shown}: port {port:?} must be a number from 1 to 65535")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_sources() {
        assert_eq!(SourceSpec::parse("v4l2:///dev/video2").unwrap(), SourceSpec::V4l2 { device: "/dev/video2".into() });
        assert_eq!(SourceSpec::parse("/dev/video0").unwrap(), SourceSpec::V4l2 { device: "/dev/video0".into() });
        assert!(matches!(SourceSpec::parse("rtsp://cam.local:554/stream1").unwrap(), SourceSpec::Rtsp { .. }));
        assert_eq!(SourceSpec::parse("file:///v/a.mp4").unwrap(), SourceSpec::Video { path: "/v/a.mp4".into() });
        assert_eq!(SourceSpec::parse("clip.mkv").unwrap(), SourceSpec::Video { path: "clip.mkv".into() });
        assert_eq!(SourceSpec::parse("face.JPG").unwrap(), SourceSpec::Images { path: "face.JPG".into() });
        assert!(SourceSpec::parse("http://x/y").is_err());
        assert!(SourceSpec::parse("file://relative.mp4").is_err());
        assert!(SourceSpec::parse("v4l2://video0").is_err());
        assert!(SourceSpec::parse("").is_err());
        assert!(SourceSpec::parse("rtsp://a/b").unwrap().is_live());
        for bad in
            ["rtsp://", "rtsp:///stream", "rtsp://u:p@/s", "rtsp://cam:0/s", "rtsp://cam:99999/s", "rtsp://cam:x/s"]
        {
            assert!(SourceSpec::parse(bad).is_err(), "{bad} has no usable host or port");
        }
        assert!(SourceSpec::parse("rtsp://[fe80::1]:554/s").is_ok());
        assert!(!SourceSpec::parse("a.mp4").unwrap().is_live());
    }

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1"), "rtsp://admin:***@10.0.0.5:554/s1");
        assert_eq!(redact_url("rtsp://10.0.0.5/s1"), "rtsp://10.0.0.5/s1");
        assert_eq!(redact_url("rtsp://u:p@h"), "rtsp://u:***@h");
    }

    #[test]
    fn a_camera_url_password_is_never_printed_for_an_unsupported_scheme() {
        for url in ["http://admin:hunter2@cam/x", "rtmp://admin:hunter2@cam", "rtsp://admin:hunter2@:99999/x"] {
            let err = SourceSpec::parse(url).unwrap_err();
            assert!(!err.contains("hunter2") && err.contains("admin:***@"), "{err}");
        }
        let text = "Could not open resource rtsp://admin:hunter2@10.0.0.5/s1 (gstrtspsrc.c: \"rtsps://a:b@h\")";
        let shown = redact_text(text);
        assert!(!shown.contains("hunter2") && !shown.contains("a:b@"), "{shown}");
        assert_eq!(redact_text("no url here"), "no url here");
        assert_eq!(redact_text("see http://host/p and x://"), "see http://host/p and x://");
    }
}
