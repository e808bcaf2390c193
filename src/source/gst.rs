//! RTSP cameras and video files through GStreamer (feature `gst`).
//!
//! Pipelines (built with `gst::parse::launch`, which links decodebin's dynamic pads itself):
//! - RTSP: `rtspsrc location=URL latency=MS protocols=tcp ! decodebin ! videoconvert ! appsink`.
//!   TCP interleaving: no UDP ports to open on the box, and no loss artefacts on busy Wi-Fi.
//! - Files: `uridecodebin uri=file:///... ! videoconvert ! appsink`.
//!
//! The appsink caps are pinned to `video/x-raw,format=RGB`, so every frame arrives as packed RGB
//! with a row stride that may exceed `3 * width` (rows are padded to 4 bytes): frames are copied
//! once, row by row, into a tight [`RgbImage`]. Live sources use `max-buffers=1 drop=true` (the
//! newest frame wins; GStreamer 1.22 has no `leaky-type`); files keep every frame and wait for the
//! reader. `sync=false` everywhere: files are read as fast as the pipeline takes them.
//!
//! Errors arrive on the bus: [`GstSource::pull`] checks it on every call, so a dropped RTSP
//! server becomes a [`SourceError::Stream`] and the camera thread reconnects. A server that goes
//! silent without an error is caught by the camera's stall timeout.

use super::{redact_text, redact_url, FrameSource, Pulled, SourceError, SourceSpec};
use crate::config::CameraConfig;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use image::RgbImage;
use std::time::Duration;

/// A GStreamer-decoded RTSP stream or video file.
#[derive(Debug)]
pub struct GstSource {
    name: String,
    /// For logs: the redacted url or the file path.
    shown: String,
    description: String,
    live: bool,
    running: Option<(gst::Element, gst_app::AppSink)>,
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
        let sink = if live { "max-buffers=1 drop=true" } else { "max-buffers=4 drop=false" };
        let description = format!(
            "{input} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false emit-signals=false {sink}"
        );
        Ok(Self { name: camera.name.clone(), shown, description, live, running: None })
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

fn init() -> Result<(), String> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| format!("GStreamer does not start: {e}"))).clone()
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
        let buffer = sample.buffer().ok_or_else(|| bad("sample without a buffer".into()))?;
        let pts = if self.live { None } else { buffer.pts().map(|t| Duration::from_nanos(t.nseconds())) };
        let map = buffer.map_readable().map_err(|e| bad(e.to_string()))?;
        let stride = info.stride().first().copied().unwrap_or(0).max(0) as usize;
        let image = packed_rgb(map.as_slice(), info.width(), info.height(), stride).map_err(bad)?;
        Ok(Pulled::Frame { image, pts })
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
