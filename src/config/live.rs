//! The configuration sections of the streaming daemon: cameras, pipeline, tracks, sinks, crops.
//! Defaults for everything but the cameras; `validate_*` functions are pure and return every
//! problem with the key's path, so `farsight validate` can list them all at once.

use crate::source::{H264Decoder, PixelFormat, SourceSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One camera (`[[camera]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique name: events carry it and MQTT topics use it (`farsight/<name>/events`).
    pub name: String,
    /// `rtsp://...`, `file:///video.mp4`, `v4l2:///dev/video0`, or a path to an image, a folder of
    /// images or a video file.
    pub url: String,
    /// Treat the source as live (drop the oldest frame when behind) or not (wait for the
    /// pipeline). Default: cameras are live, files are not.
    #[serde(default)]
    pub live: Option<bool>,
    /// V4L2: the resolution and rate to ask the device for (it may pick the nearest).
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub fps: Option<u32>,
    /// V4L2: `mjpeg` or `yuyv` (default: mjpeg when the device offers it, else yuyv).
    #[serde(default)]
    pub format: Option<PixelFormat>,
    /// Image folders: stream time between two images (tracks span consecutive images closer
    /// than `track.lost_after_s`).
    #[serde(default = "default_frame_interval_ms")]
    pub frame_interval_ms: u64,
    /// RTSP: jitter buffer latency.
    #[serde(default = "default_rtsp_latency_ms")]
    pub rtsp_latency_ms: u32,
    /// RTSP and video files: threads of a libav (`avdec_*`) software decoder; 0 lets the decoder
    /// choose (one per core, plus one). One thread decodes the same frames with less CPU (a
    /// 640x480 H.264 file here: 1.07 against 1.45 CPU seconds), which is what a box whose cores
    /// run recognition wants; raise it for a stream one core cannot decode in real time (4K).
    #[serde(default = "default_decode_threads")]
    pub decode_threads: u32,
    /// A live source that delivers no frame for this long is closed and reopened.
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: f32,
    /// Where the detector looks in this camera's frames (`[camera.motion]`).
    #[serde(default)]
    pub motion: crate::motion::MotionConfig,
    /// A `--source` path that is not UTF-8 (`url` then only shows it): read from here instead.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

fn default_frame_interval_ms() -> u64 {
    1000
}
fn default_rtsp_latency_ms() -> u32 {
    200
}
fn default_decode_threads() -> u32 {
    1
}
fn default_stall_timeout_s() -> f32 {
    10.0
}

impl CameraConfig {
    /// A camera for a `--source` given on the command line.
    pub fn from_url(url: &str) -> Self {
        let name = SourceSpec::parse(url)
            .ok()
            .and_then(|s| match s {
                SourceSpec::V4l2 { device: p } | SourceSpec::Video { path: p } | SourceSpec::Images { path: p } => {
                    p.file_stem().map(|s| s.to_string_lossy().into_owned())
                }
                SourceSpec::Rtsp { .. } => None,
                SourceSpec::Stall => Some("stall".into()),
            })
            .unwrap_or_else(|| "camera".to_owned());
        Self {
            name,
            url: url.to_owned(),
            live: None,
            width: None,
            height: None,
            fps: None,
            format: None,
            frame_interval_ms: default_frame_interval_ms(),
            rtsp_latency_ms: default_rtsp_latency_ms(),
            decode_threads: default_decode_threads(),
            stall_timeout_s: default_stall_timeout_s(),
            motion: Default::default(),
            path: None,
        }
    }

    /// A camera for a `--source` argument, which may be a path that is not UTF-8 (as `enroll`'s
    /// image paths may be).
    pub fn from_arg(arg: &std::ffi::OsStr) -> Self {
        match arg.to_str() {
            Some(url) => Self::from_url(url),
            None => {
                let path = PathBuf::from(arg);
                let shown = path.display().to_string();
                let name = path.file_stem().map_or("camera".into(), |s| s.to_string_lossy().into_owned());
                Self { name, path: Some(path), ..Self::from_url(&shown) }
            }
        }
    }

    /// The parsed url (valid after validation).
    pub fn spec(&self) -> Result<SourceSpec, String> {
        match &self.path {
            Some(path) => Ok(SourceSpec::from_path(path.clone())),
            None => SourceSpec::parse(&self.url),
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.unwrap_or_else(|| self.spec().is_ok_and(|s| s.is_live()))
    }
}

/// `[pipeline]`: threads and queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Recognition workers shared by all cameras (0: one per CPU core).
    pub workers: usize,
    /// Frames waiting per camera between capture and recognition. A live camera that finds its
    /// queue full drops the oldest frame (fresh frames beat complete history); a file waits.
    pub frame_queue: usize,
    /// Seconds between the counters' log lines and status-file updates.
    pub status_interval_s: f32,
    /// JSON file rewritten with the counters every `status_interval_s` (`farsight status` reads
    /// it). Default: `<gallery>.status.json`.
    pub status_file: Option<PathBuf>,
    /// RTSP and video files: `openh264` (default) or `auto`, for every camera (GStreamer's
    /// decoder ranks are per process); see [`H264Decoder`].
    pub h264_decoder: H264Decoder,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            frame_queue: 2,
            status_interval_s: 10.0,
            status_file: None,
            h264_decoder: H264Decoder::default(),
        }
    }
}

/// `[track]`: how faces are followed across frames and when a track is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackConfig {
    /// A face continues a track when its box overlaps the track's last box by at least this IoU...
    pub iou_min: f32,
    /// ...and its embedding is at least this similar to the track's (an overlapping box that
    /// shows a clearly different face starts a new track)...
    pub overlap_similarity_min: f32,
    /// ...or when its embedding is at least this similar to the track's fused embedding and its
    /// box is within `max_jump` box widths of the last one.
    pub similarity_min: f32,
    pub max_jump: f32,
    /// A track not seen for this long (stream time) is closed and its event sent.
    pub lost_after_s: f32,
    /// Tracks seen in fewer frames are dropped without an event (detector noise).
    pub min_frames: u32,
    /// The best shots fused into the track's embedding (at most 8).
    pub best_shots: usize,
    /// Announce each visit's decision while the person is still there (a `decision` event),
    /// before the `final` event that closes the visit.
    pub announce: bool,
    /// Frames a track needs before its decision is announced (a match is announced as soon as
    /// the fused embedding matches; a stranger after `unknown_after_s`).
    pub announce_frames: u32,
    /// A track that matches nobody is announced as `unknown` once it has been seen this long
    /// (stream seconds): a better shot a moment later may still match.
    pub unknown_after_s: f32,
    /// Send an `update` event when an announced decision changes while the track is open.
    pub updates: bool,
    /// How far past the threshold the evidence must go before an announced decision is changed
    /// by an update: a match becomes unknown below `threshold - update_margin`, an unknown
    /// becomes a match at `threshold + update_margin`, and another identity must beat the
    /// announced one by the margin. Without it a face scoring near the threshold flips the
    /// decision back and forth, one update event each time. The final event is not held to it.
    pub update_margin: f32,
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            iou_min: 0.3,
            overlap_similarity_min: 0.2,
            similarity_min: 0.5,
            max_jump: 2.0,
            lost_after_s: 1.5,
            min_frames: 1,
            best_shots: 5,
            announce: true,
            announce_frames: 3,
            unknown_after_s: 2.0,
            updates: true,
            update_margin: 0.03,
        }
    }
}

/// `[sinks]`: where events go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// JSON lines on stdout.
    pub stdout: bool,
    pub sqlite: Option<SqliteSinkConfig>,
    pub mqtt: Option<MqttSinkConfig>,
    pub webhook: Option<WebhookSinkConfig>,
    /// Events waiting per sink; a full queue drops the new event and counts it.
    pub queue: usize,
    /// Delivery attempts after the first failure, with exponential backoff from `retry_backoff_ms`
    /// (capped at 30 s).
    pub retries: u32,
    pub retry_backoff_ms: u64,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self { stdout: true, sqlite: None, mqtt: None, webhook: None, queue: 256, retries: 5, retry_backoff_ms: 500 }
    }
}

/// `[sinks.sqlite]`: an `events` table in the gallery database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteSinkConfig {
    /// Events older than this are deleted (0: keep by count only).
    pub retention_days: u32,
    /// At most this many events are kept; the oldest go first.
    pub max_events: u64,
}

impl Default for SqliteSinkConfig {
    fn default() -> Self {
        Self { retention_days: 30, max_events: 100_000 }
    }
}

/// `[sinks.mqtt]`: events on `<topic_prefix>/<camera>/events`, availability (retained, with a last
/// will) on `<topic_prefix>/<client_id>/availability` — the convention Home Assistant and Frigate
/// users expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub topic_prefix: String,
    /// 0, 1 or 2.
    pub qos: u8,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connect with TLS; `ca_file` (PEM) verifies the broker, else the system roots are used.
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub keep_alive_s: u16,
    /// Events held while the broker is unreachable; beyond this they are dropped and counted.
    pub offline_queue: usize,
    /// Home Assistant MQTT discovery: a device with per-camera and per-identity entities.
    pub discovery: bool,
    /// Home Assistant's discovery prefix (its `status` topic lives there too).
    pub discovery_prefix: String,
}

impl Default for MqttSinkConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "farsight".to_owned(),
            topic_prefix: "farsight".to_owned(),
            qos: 1,
            username: None,
            password: None,
            tls: false,
            ca_file: None,
            keep_alive_s: 30,
            offline_queue: 1000,
            discovery: true,
            discovery_prefix: "homeassistant".to_owned(),
        }
    }
}

/// `[sinks.webhook]`: each event POSTed as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSinkConfig {
    pub url: String,
    /// Per-request timeout (connect + answer).
    pub timeout_ms: u64,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
}

impl Default for WebhookSinkConfig {
    fn default() -> Self {
        Self { url: String::new(), timeout_ms: 5000, bearer_token: None }
    }
}

/// `[crops]`: best-shot face crops on disk. Off by default: they are biometric data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropsConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    /// Crops older than this are deleted (0: keep by count only).
    pub retention_days: u32,
    /// At most this many crops are kept; the oldest go first.
    pub max_files: usize,
}

impl Default for CropsConfig {
    fn default() -> Self {
        Self { enabled: false, dir: PathBuf::from("farsight-crops"), retention_days: 7, max_files: 10_000 }
    }
}

pub(super) fn validate_cameras(cameras: &[CameraConfig], p: &mut Vec<String>) {
    let mut names = std::collections::HashSet::new();
    for (i, c) in cameras.iter().enumerate() {
        let at = format!("camera[{i}] ({:?})", c.name);
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !name_ok {
            p.push(format!("{at}: name must be 1-64 characters of a-z, A-Z, 0-9, - or _ (it is an MQTT topic level)"));
        }
        if !names.insert(c.name.as_str()) {
            p.push(format!("{at}: name is used by another camera"));
        }
        match c.spec() {
            Err(e) => p.push(format!("{at}: url {e}")),
            Ok(SourceSpec::V4l2 { .. }) => {}
            Ok(_) if c.width.is_some() || c.height.is_some() || c.fps.is_some() || c.format.is_some() => {
                p.push(format!("{at}: width, height, fps and format apply to V4L2 cameras only"))
            }
            Ok(_) => {}
        }
        if c.width.is_some() != c.height.is_some() {
            p.push(format!("{at}: give both width and height, or neither"));
        }
        if c.fps == Some(0) {
            p.push(format!("{at}: fps must be at least 1"));
        }
        if c.decode_threads > 64 {
            p.push(format!(
                "{at}: decode_threads = {} must be between 0 (the decoder's choice) and 64",
                c.decode_threads
            ));
        }
        if !(c.stall_timeout_s >= 1.0 && c.stall_timeout_s <= 3600.0) {
            p.push(format!("{at}: stall_timeout_s = {} must be between 1 and 3600", c.stall_timeout_s));
        }
        c.motion.validate(&at, p);
        if c.frame_interval_ms == 0 || c.frame_interval_ms > 3_600_000 {
            p.push(format!("{at}: frame_interval_ms = {} must be between 1 and 3600000", c.frame_interval_ms));
        }
    }
}

pub(super) fn validate_runtime(
    pipeline: &PipelineConfig,
    track: &TrackConfig,
    sinks: &SinksConfig,
    crops: &CropsConfig,
    p: &mut Vec<String>,
) {
    if pipeline.workers > 64 {
        p.push(format!("pipeline.workers = {} must be at most 64 (0 = one per core)", pipeline.workers));
    }
    if !(1..=64).contains(&pipeline.frame_queue) {
        p.push(format!("pipeline.frame_queue = {} must be between 1 and 64", pipeline.frame_queue));
    }
    if !(pipeline.status_interval_s >= 0.1 && pipeline.status_interval_s <= 3600.0) {
        p.push(format!("pipeline.status_interval_s = {} must be between 0.1 and 3600", pipeline.status_interval_s));
    }
    if !(0.0..=1.0).contains(&track.iou_min) {
        p.push(format!("track.iou_min = {} must be in [0, 1]", track.iou_min));
    }
    if !(-1.0..=1.0).contains(&track.overlap_similarity_min) {
        p.push(format!("track.overlap_similarity_min = {} must be in [-1, 1]", track.overlap_similarity_min));
    }
    if !(-1.0..=1.0).contains(&track.similarity_min) {
        p.push(format!("track.similarity_min = {} must be in [-1, 1]", track.similarity_min));
    }
    if !(track.max_jump > 0.0 && track.max_jump <= 100.0) {
        p.push(format!("track.max_jump = {} must be in (0, 100]", track.max_jump));
    }
    if !(track.lost_after_s > 0.0 && track.lost_after_s <= 3600.0) {
        p.push(format!("track.lost_after_s = {} must be in (0, 3600]", track.lost_after_s));
    }
    if !(1..=1000).contains(&track.announce_frames) {
        p.push(format!("track.announce_frames = {} must be between 1 and 1000", track.announce_frames));
    }
    if !(track.update_margin >= 0.0 && track.update_margin <= 1.0) {
        p.push(format!("track.update_margin = {} must be between 0 and 1", track.update_margin));
    }
    if !(track.unknown_after_s >= 0.0 && track.unknown_after_s <= 3600.0) {
        p.push(format!("track.unknown_after_s = {} must be between 0 and 3600", track.unknown_after_s));
    }
    if track.min_frames == 0 {
        p.push("track.min_frames must be at least 1".to_owned());
    }
    if !(1..=crate::track::MAX_BEST_SHOTS).contains(&track.best_shots) {
        p.push(format!(
            "track.best_shots = {} must be between 1 and {}",
            track.best_shots,
            crate::track::MAX_BEST_SHOTS
        ));
    }
    if !(1..=1_000_000).contains(&sinks.queue) {
        p.push(format!("sinks.queue = {} must be between 1 and 1000000", sinks.queue));
    }
    if sinks.retries > 100 {
        p.push(format!("sinks.retries = {} must be at most 100", sinks.retries));
    }
    if !(1..=60_000).contains(&sinks.retry_backoff_ms) {
        p.push(format!("sinks.retry_backoff_ms = {} must be between 1 and 60000", sinks.retry_backoff_ms));
    }
    if let Some(s) = &sinks.sqlite {
        if s.max_events == 0 {
            p.push("sinks.sqlite.max_events must be at least 1".to_owned());
        }
    }
    if let Some(m) = &sinks.mqtt {
        if m.host.is_empty() || m.host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
            p.push(format!("sinks.mqtt.host = {:?} must be a host name or address", m.host));
        }
        if m.port == 0 {
            p.push("sinks.mqtt.port = 0 must be from 1 to 65535 (1883, or 8883 with TLS)".to_owned());
        }
        if m.qos > 2 {
            p.push(format!("sinks.mqtt.qos = {} must be 0, 1 or 2", m.qos));
        }
        if m.client_id.is_empty() || m.client_id.contains(['/', '+', '#']) {
            p.push(format!("sinks.mqtt.client_id = {:?} must be non-empty without /, + or #", m.client_id));
        }
        if m.discovery_prefix.is_empty() || m.discovery_prefix.contains(['+', '#']) || m.discovery_prefix.ends_with('/')
        {
            p.push(format!(
                "sinks.mqtt.discovery_prefix = {:?} must be non-empty, without + or #, not end in /",
                m.discovery_prefix
            ));
        }
        if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) || m.topic_prefix.ends_with('/') {
            p.push(format!(
                "sinks.mqtt.topic_prefix = {:?} must be non-empty, without + or #, not end in /",
                m.topic_prefix
            ));
        }
        if m.password.is_some() && m.username.is_none() {
            p.push("sinks.mqtt.password needs sinks.mqtt.username".to_owned());
        }
        if m.ca_file.is_some() && !m.tls {
            p.push("sinks.mqtt.ca_file needs sinks.mqtt.tls = true".to_owned());
        }
        if m.keep_alive_s < 5 {
            p.push(format!("sinks.mqtt.keep_alive_s = {} must be at least 5", m.keep_alive_s));
        }
        if m.offline_queue == 0 {
            p.push("sinks.mqtt.offline_queue must be at least 1".to_owned());
        }
    }
    if let Some(w) = &sinks.webhook {
        let shown = crate::source::redact_url(&w.url);
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            p.push(format!("sinks.webhook.url = {shown:?} must start with http:// or https://"));
        } else if let Err(e) = crate::source::check_authority(&w.url) {
            p.push(format!("sinks.webhook.url = {e}"));
        }
        if !(100..=600_000).contains(&w.timeout_ms) {
            p.push(format!("sinks.webhook.timeout_ms = {} must be between 100 and 600000", w.timeout_ms));
        }
    }
    if crops.enabled && crops.dir.as_os_str().is_empty() {
        p.push("crops.dir is empty".to_owned());
    }
    if crops.enabled && crops.max_files == 0 {
        p.push("crops.max_files must be at least 1".to_owned());
    }
}
