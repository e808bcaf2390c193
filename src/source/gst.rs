//! RTSP cameras and video files through GStreamer (feature `gst`).
//!
//! Pipelines (built with `gst::parse::launch`, which links decodebin's dynamic pads itself):
//! - RTSP: `rtspsrc location=URL latency=MS protocols=tcp ! decodebin ! videoconvert ! appsink`.
//!   TCP interleaving: no UDP ports to open on the box, and no loss artefacts on busy Wi-Fi.
//! - Files: `uridecodebin uri=file:///... ! videoconvert ! appsink`.
//!
//! H.264 goes to OpenH264 unless `pipeline.h264_decoder = "auto"` ([`set_h264_decoder`]): its
//! rank is raised above libav's for the process. A per-pipeline `autoplug-select` that skips
//! `avdec_h264` does not work: decodebin only lists decoders whose sink caps meet h264parse's
//! output as negotiated for the best-ranked one (`stream-format=avc`), and OpenH264 takes
//! byte-stream only, so skipping libav leaves no decoder at all.
//!
//! The appsink caps are pinned to `video/x-raw,format=I420` (videoconvert passes the decoder's
//! frames through untouched when they already are, as H.264/H.265 decoders' usually are). A frame
//! stays in its GStreamer buffer as a [`YuvFrame`]: the motion stage reads its Y plane, and only a
//! frame the workers will search is converted to packed RGB, by the worker that searches it (so
//! the frame queue holds I420, half of RGB's bytes), with GStreamer's own converter (the one
//! videoconvert uses, so the pixels are the same as when the appsink asked for RGB; one per
//! stream, locked: it is not safe to share). A static
//! scene therefore costs the decoder and a look at the Y plane, and no RGB frame pool is held
//! (1080p: 545 -> 510 MiB peak RSS with the RGB caps and a 4-buffer appsink; see the README).
//! Live sources use `max-buffers=1 drop=true` (the newest frame wins; GStreamer 1.22 has no
//! `leaky-type`); files keep every frame, one buffered, and wait for the reader. `sync=false`
//! everywhere: files are read as fast as the pipeline takes them.
//!
//! Errors arrive on the bus: [`GstSource::pull`] checks it on every call, so a dropped RTSP
//! server becomes a [`SourceError::Stream`] and the camera thread reconnects. A server that goes
//! silent without an error is caught by the camera's stall timeout.

use super::{redact_text, redact_url, FrameSource, H264Decoder, Luma, Picture, Pulled, SourceError, SourceSpec};
use crate::config::CameraConfig;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;
use std::sync::Arc;
use std::time::Duration;

/// A GStreamer-decoded RTSP stream or video file.
#[derive(Debug)]
pub struct GstSource {
    name: String,
    /// For logs: the redacted url or the file path.
    shown: String,
    description: String,
    live: bool,
    /// `max-threads` of a libav decoder (0: its own choice).
    decode_threads: u32,
    running: Option<(gst::Element, gst_app::AppSink)>,
    /// The converter of the current caps, shared with the frames that may need it.
    converter: Option<Arc<Converter>>,
}

impl GstSource {
    /// Prepares the pipeline description for `spec` (an RTSP url or a video file).
    pub fn new(camera: &CameraConfig, spec: &SourceSpec) -> Result<Self, SourceError> {
        let open_err =
            |message: String| SourceError::Open { source_name: camera.name.clone(), message: redact_text(&message) };
        let (shown, input) = match spec {
            SourceSpec::Rtsp { url } => {
                if url.contains(['"', '\\', ' ']) {
                    return Err(open_err("an RTSP url may not contain quotes, backslashes or spaces".into()));
                }
                let input =
                    format!("rtspsrc location=\"{url}\" latency={} protocols=tcp ! decodebin", camera.rtsp_latency_ms);
                (redact_url(url), input)
            }
            SourceSpec::Video { path } => {
                let absolute = std::path::absolute(path).map_err(|e| open_err(format!("{}: {e}", path.display())))?;
                let uri = gstreamer::glib::filename_to_uri(&absolute, None)
                    .map_err(|e| open_err(format!("{}: {e}", path.display())))?;
                (path.display().to_string(), format!("uridecodebin uri=\"{uri}\""))
            }
            _ => return Err(open_err("not an RTSP url or a video file".into())),
        };
        let live = camera.is_live();
        let sink = if live { "max-buffers=1 drop=true" } else { "max-buffers=1 drop=false" };
        let description = format!(
            "{input} ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false emit-signals=false {sink}"
        );
        Ok(Self {
            name: camera.name.clone(),
            shown,
            description,
            live,
            decode_threads: camera.decode_threads,
            running: None,
            converter: None,
        })
    }

    fn stream_err(&self, message: String) -> SourceError {
        // GStreamer's messages can quote the location, password included.
        SourceError::Stream { source_name: self.name.clone(), message: redact_text(&message) }
    }

    /// The first error (or end of stream) waiting on the pipeline's bus.
    fn bus_problem(pipeline: &gst::Element) -> Option<Result<(), String>> {
        let bus = pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(Err(match e.debug() {
                Some(debug) => format!("{} ({debug})", e.error()),
                None => e.error().to_string(),
            })),
            _ => Some(Ok(())),
        }
    }
}

static H264: std::sync::OnceLock<H264Decoder> = std::sync::OnceLock::new();

/// Chooses the H.264 decoder of every pipeline this process opens; call it before the first.
pub fn set_h264_decoder(choice: H264Decoder) {
    let _ = H264.set(choice);
}

/// Ranks `openh264dec` just above `avdec_h264` (decodebin tries factories by rank, and a caps
/// query answered in that order makes h264parse hand over the byte-stream OpenH264 takes).
/// Hardware decoders rank above both and stay first.
fn prefer_openh264() {
    let registry = gst::Registry::get();
    let (Some(openh264), Some(libav)) = (registry.lookup_feature("openh264dec"), registry.lookup_feature("avdec_h264"))
    else {
        log::info!("openh264dec is not installed (gstreamer1.0-plugins-bad): H.264 goes to libav");
        return;
    };
    openh264.set_rank(gst::Rank::PRIMARY);
    libav.set_rank(gst::Rank::PRIMARY - 1);
}

fn init() -> Result<(), String> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| format!("GStreamer does not start: {e}"))?;
        if *H264.get_or_init(H264Decoder::default) == H264Decoder::Openh264 {
            prefer_openh264();
        }
        Ok(())
    })
    .clone()
}

impl FrameSource for GstSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.close();
        let open_err =
            |message: String| SourceError::Open { source_name: self.name.clone(), message: redact_text(&message) };
        init().map_err(open_err)?;
        let pipeline = gst::parse::launch(&self.description)
            .map_err(|e| open_err(format!("{e} (are the GStreamer plugins installed? see README)")))?;
        let sink = pipeline
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name("sink"))
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| open_err("the pipeline has no appsink".into()))?;
        if let Some(bin) = pipeline.downcast_ref::<gst::Bin>() {
            // decodebin picks the decoder at run time: set its threads as it is added.
            let threads = i32::try_from(self.decode_threads).unwrap_or(0);
            let camera = self.name.clone();
            bin.connect_deep_element_added(move |_, _, element| {
                let Some(factory) = element.factory() else { return };
                if factory.klass().contains("Decoder/Video") {
                    log::info!("camera {camera}: {} decodes the stream", factory.name());
                }
                let is_libav = factory.name().starts_with("avdec_");
                if is_libav && element.has_property("max-threads") {
                    element.set_property("max-threads", threads);
                }
            });
        }
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let detail = Self::bus_problem(&pipeline).and_then(Result::err).unwrap_or_else(|| e.to_string());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(open_err(format!("{}: {detail}", self.shown)));
        }
        self.running = Some((pipeline, sink));
        Ok(())
    }

    fn pull(&mut self, timeout: Duration) -> Result<Pulled, SourceError> {
        let Some((pipeline, sink)) = &self.running else {
            return Err(self.stream_err("pulled before open".into()));
        };
        if let Some(Err(message)) = Self::bus_problem(pipeline) {
            return Err(self.stream_err(message));
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64)) else {
            return Ok(if sink.is_eos() { Pulled::End } else { Pulled::Pending });
        };
        let bad = |message: String| SourceError::BadFrame { source_name: self.name.clone(), message };
        let caps = sample.caps().ok_or_else(|| bad("sample without caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(e.to_string()))?;
        if info.format() != gst_video::VideoFormat::I420 || info.width() == 0 || info.height() == 0 {
            return Err(bad(format!("unexpected frame format {:?} {}x{}", info.format(), info.width(), info.height())));
        }
        let buffer = sample.buffer_owned().ok_or_else(|| bad("sample without a buffer".into()))?;
        let pts = if self.live { None } else { buffer.pts().map(|t| Duration::from_nanos(t.nseconds())) };
        let converter = match &self.converter {
            Some(c) if c.input == info => c.clone(),
            _ => {
                let c = Arc::new(Converter::new(&info).map_err(bad)?);
                self.converter = Some(c.clone());
                c
            }
        };
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, &info)
            .map_err(|_| bad("cannot map the frame's buffer".into()))?;
        Ok(Pulled::Frame { picture: Picture::Yuv(Box::new(YuvFrame { frame, converter })), pts })
    }

    fn close(&mut self) {
        if let Some((pipeline, _)) = self.running.take() {
            let _ = pipeline.set_state(gst::State::Null);
        }
    }
}

impl Drop for GstSource {
    fn drop(&mut self) {
        self.close();
    }
}

/// A decoded I420 frame, still in its GStreamer buffer (see the module's documentation).
pub struct YuvFrame {
    frame: gst_video::VideoFrame<gst_video::video_frame::Readable>,
    converter: Arc<Converter>,
}

impl std::fmt::Debug for YuvFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "YuvFrame({}x{})", self.frame.width(), self.frame.height())
    }
}

impl YuvFrame {
    pub fn dimensions(&self) -> (u32, u32) {
        (self.frame.width(), self.frame.height())
    }

    /// The Y plane (limited range unless the caps say full range).
    pub fn luma(&self) -> Luma<'_> {
        let (width, height) = self.dimensions();
        let data = self.frame.plane_data(0).unwrap_or(&[]);
        let stride = self.frame.plane_stride().first().copied().unwrap_or(0).max(0) as usize;
        let limited = self.frame.info().colorimetry().range() != gst_video::VideoColorRange::Range0_255;
        Luma::Plane { data, width, height, stride, limited }
    }

    /// Converts the frame to packed RGB with GStreamer's converter. It writes straight into the
    /// image's own Vec (wrapped as the buffer's memory and taken back), so a frame whose rows
    /// need no padding (width x 3 a multiple of 4: 640, 1280, 1920...) is converted with no
    /// second 6.2 MB (1080p) buffer and no copy.
    pub fn into_rgb(self) -> Result<RgbImage, String> {
        let (width, height) = self.dimensions();
        let output = &self.converter.output;
        let buffer = gst::Buffer::from_mut_slice(vec![0u8; output.size()]);
        let mut rgb = gst_video::VideoFrame::from_buffer_writable(buffer, output)
            .map_err(|_| "cannot map the RGB frame's buffer".to_owned())?;
        // One conversion at a time: GstVideoConverter keeps per-call scratch lines, and two
        // workers converting at once crashed in libgstvideo (the binding calls it Sync).
        let converter = self.converter.converter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        converter.frame(&self.frame, &mut rgb);
        drop(converter);
        let stride = rgb.plane_stride().first().copied().unwrap_or(0).max(0) as usize;
        let row = width as usize * 3;
        match rgb.into_buffer().try_into_inner::<Vec<u8>>() {
            Ok(mut data) if stride == row && data.len() >= row * height as usize => {
                data.truncate(row * height as usize);
                RgbImage::from_raw(width, height, data).ok_or_else(|| "frame size mismatch".to_owned())
            }
            Ok(data) => packed_rgb(&data, width, height, stride),
            Err((buffer, _)) => {
                let map = buffer.map_readable().map_err(|e| e.to_string())?;
                packed_rgb(map.as_slice(), width, height, stride)
            }
        }
    }
}

/// I420 -> RGB for one stream's caps (made again when the caps change).
#[derive(Debug)]
struct Converter {
    input: gst_video::VideoInfo,
    output: gst_video::VideoInfo,
    converter: std::sync::Mutex<gst_video::VideoConverter>,
}

impl Converter {
    fn new(input: &gst_video::VideoInfo) -> Result<Self, String> {
        // As videoconvert negotiates it: full-range RGB that keeps the stream's transfer function
        // and primaries (the default sRGB output would change the colours of a BT.601 stream).
        let c = input.colorimetry();
        let colorimetry = gst_video::VideoColorimetry::new(
            gst_video::VideoColorRange::Range0_255,
            gst_video::VideoColorMatrix::Rgb,
            c.transfer(),
            c.primaries(),
        );
        let output = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, input.width(), input.height())
            .colorimetry(&colorimetry)
            .fps(input.fps())
            .par(input.par())
            .interlace_mode(input.interlace_mode())
            .build()
            .map_err(|e| e.to_string())?;
        let converter = gst_video::VideoConverter::new(input, &output, None).map_err(|e| e.to_string())?;

        Ok(Self { input: input.clone(), output, converter: std::sync::Mutex::new(converter) })
    }
}

/// Copies RGB rows of `stride` bytes into a tightly packed image.
pub fn packed_rgb(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage, String> {
    let row = width as usize * 3;
    let need = if height == 0 { 0 } else { stride * (height as usize - 1) + row };
    if width == 0 || height == 0 || stride < row || data.len() < need {
        return Err(format!(
            "RGB frame {width}x{height}, stride {stride}: buffer of {} bytes is too small",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        out.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| "frame size mismatch".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4:2:0 H.264 clip of `frames` SMPTE bars (as cameras send; x264enc would keep
    /// videotestsrc's 4:4:4 otherwise).
    fn clip(dir: &std::path::Path, w: u32, h: u32, frames: u32) -> std::path::PathBuf {
        let video = dir.join("clip.mp4");
        let status = std::process::Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", &format!("num-buffers={frames}"), "pattern=smpte", "!"])
            .arg(format!("video/x-raw,format=I420,width={w},height={h}"))
            .args(["!", "x264enc", "threads=1", "!", "h264parse", "!", "mp4mux", "!", "filesink"])
            .arg(format!("location={}", video.display()))
            .status()
            .expect("gst-launch-1.0 runs (scripts/install-deps.sh installs it)");
        assert!(status.success(), "encoding the test video failed (x264enc is in gstreamer1.0-plugins-ugly)");
        video
    }

    /// Workers convert the frames they search: one stream's frames converted on two threads at
    /// once crashed in libgstvideo (one GstVideoConverter, not safe to share) before the
    /// converter was locked.
    #[test]
    fn frames_of_one_stream_converted_by_two_workers_at_once_do_not_crash() {
        let dir = tempfile::tempdir().unwrap();
        let video = clip(dir.path(), 320, 240, 16);
        let cam = CameraConfig::from_url(video.to_str().unwrap());
        let expected = frames(&mut GstSource::new(&cam, &cam.spec().unwrap()).unwrap());
        let mut source = GstSource::new(&cam, &cam.spec().unwrap()).unwrap();
        source.open().unwrap();
        let mut pictures = Vec::new();
        loop {
            match source.pull(Duration::from_secs(5)).unwrap() {
                Pulled::Frame { picture, .. } => pictures.push(picture),
                Pulled::Pending => continue,
                Pulled::End => break,
            }
        }
        assert_eq!(pictures.len(), expected.len());
        let (evens, odds): (Vec<_>, Vec<_>) = pictures.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let convert = |ps: Vec<(usize, super::super::Picture)>| {
            std::thread::spawn(move || ps.into_iter().map(|(i, p)| (i, p.into_rgb().unwrap())).collect::<Vec<_>>())
        };
        let (a, b) = (convert(evens), convert(odds));
        for (i, image) in a.join().unwrap().into_iter().chain(b.join().unwrap()) {
            assert!(image == expected[i], "frame {i}");
        }
    }

    /// Every frame of `source`, converted to RGB.
    fn frames(source: &mut GstSource) -> Vec<RgbImage> {
        source.open().unwrap();
        let mut out = Vec::new();
        loop {
            match source.pull(Duration::from_secs(5)).unwrap() {
                Pulled::Frame { picture, .. } => out.push(picture.into_rgb().unwrap()),
                Pulled::Pending => continue,
                Pulled::End => return out,
            }
        }
    }

    /// Every frame of a pipeline whose appsink asks videoconvert for RGB.
    fn videoconvert_rgb(description: &str) -> Vec<RgbImage> {
        let pipeline = gst::parse::launch(description).unwrap();
        let sink = pipeline.downcast_ref::<gst::Bin>().unwrap().by_name("sink").unwrap();
        let sink = sink.downcast::<gst_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut out = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
            let map = sample.buffer().unwrap().map_readable().unwrap();
            let stride = info.stride()[0] as usize;
            out.push(packed_rgb(map.as_slice(), info.width(), info.height(), stride).unwrap());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        out
    }

    /// A 4:2:0 stream (with 4:4:4 both paths would go through a lossy I420 step that is not
    /// the same).
    #[test]
    fn frames_converted_on_demand_have_the_pixels_videoconvert_gives() {
        // 322 px rows are padded to 968 bytes (copied row by row); 320 px rows are not (the
        // converter writes straight into the image's Vec).
        for (w, h) in [(322, 242), (320, 240)] {
            let dir = tempfile::tempdir().unwrap();
            let video = clip(dir.path(), w, h, 4);
            let cam = CameraConfig::from_url(video.to_str().unwrap());
            let mut ours = GstSource::new(&cam, &cam.spec().unwrap()).unwrap();
            let (a, b) = (frames(&mut ours), videoconvert_rgb(&ours.description.replace("format=I420", "format=RGB")));
            assert_eq!(a.len(), 4);
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.dimensions(), (w, h));
                let diff = x.as_raw().iter().zip(y.as_raw()).map(|(p, q)| p.abs_diff(*q)).max();
                assert_eq!(diff, Some(0), "the same pixels as an RGB appsink at {w}x{h}");
            }
        }
    }

    #[test]
    fn padded_rows_are_packed() {
        // 3x2 RGB with rows padded to 12 bytes.
        let mut data = vec![0u8; 24];
        data[..9].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        data[12..21].copy_from_slice(&[10, 11, 12, 13, 14, 15, 16, 17, 18]);
        let img = packed_rgb(&data, 3, 2, 12).unwrap();
        assert_eq!(img.as_raw(), &(1..=18).collect::<Vec<u8>>());
        assert!(packed_rgb(&data[..20], 3, 2, 12).is_err());
        assert!(packed_rgb(&data, 5, 2, 12).is_err());
    }

    #[test]
    fn credentials_stay_out_of_the_description_shown() {
        let cam = CameraConfig::from_url("rtsp://admin:secret@127.0.0.1:8554/cam");
        let src = GstSource::new(&cam, &cam.spec().unwrap()).unwrap();
        assert!(!src.describe().contains("secret"));
        let bad = CameraConfig::from_url("rtsp://127.0.0.1/a b");
        assert!(GstSource::new(&bad, &bad.spec().unwrap()).is_err());
    }

    #[test]
    fn a_missing_file_fails_at_open() {
        let cam = CameraConfig::from_url("/nonexistent/clip.mp4");
        let mut src = GstSource::new(&cam, &cam.spec().unwrap()).unwrap();
        let opened = src.open();
        // uridecodebin may report the missing file at the state change or on the bus.
        let failed = opened.is_err() || matches!(src.pull(Duration::from_secs(5)), Err(SourceError::Stream { .. }));
        assert!(failed);
    }
}
