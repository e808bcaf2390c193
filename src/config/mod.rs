//! Configuration: a versioned TOML file (`deny_unknown_fields`, defaults for everything), checked
//! by a pure [`Config::validate`] before anything is built. `farsight validate --config F` runs the
//! same checks. Without a file, [`Config::default`] is the embedded default the README demo uses.

mod live;

pub use live::{
    CameraConfig, CropsConfig, MqttSinkConfig, PipelineConfig, SinksConfig, SqliteSinkConfig, TrackConfig,
    WebhookSinkConfig,
};

use crate::detect::DetectorConfig;
use crate::embed::EmbedConfig;
use crate::restore::RestoreKind;
use crate::service::ServiceConfig;
use crate::source::images::ImageLimits;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The `models/` folder of the source tree this binary was built from.
pub const DEFAULT_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// Default gallery database of a binary run from a checkout, relative to the working directory.
pub const DEFAULT_GALLERY: &str = "farsight-gallery.db";

/// Where an installed farsight keeps its state (the Debian package's `/var/lib/farsight`, the
/// unit's `StateDirectory=`).
pub const INSTALLED_STATE_DIR: &str = "/var/lib/farsight";

/// The models folder of an installed binary: `<prefix>/bin/farsight` reads
/// `<prefix>/share/farsight/models` (the Debian package puts them in /usr/share/farsight/models).
pub fn installed_models_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("share/farsight/models");
    dir.is_dir().then_some(dir)
}

/// Where the models are when the config does not say: beside an installed binary, else the
/// source tree's `models/` (a binary run from a checkout).
pub fn default_models_dir() -> PathBuf {
    installed_models_dir().unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR))
}

/// The gallery when neither the config nor `--gallery` says: `gallery.db` in systemd's
/// `STATE_DIRECTORY` when the unit sets one, in /var/lib/farsight for an installed binary, else
/// `farsight-gallery.db` in the working directory (a checkout).
pub fn default_gallery() -> PathBuf {
    if let Some(state) = std::env::var_os("STATE_DIRECTORY").filter(|s| !s.is_empty()) {
        // systemd may list several folders separated by ':'; the first is ours.
        let state = state.to_string_lossy();
        return PathBuf::from(state.split(':').next().unwrap_or_default()).join("gallery.db");
    }
    if installed_models_dir().is_some() {
        return PathBuf::from(INSTALLED_STATE_DIR).join("gallery.db");
    }
    PathBuf::from(DEFAULT_GALLERY)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    pub models_dir: PathBuf,
    pub gallery: PathBuf,
    pub detector: DetectorConfig,
    pub restore: RestoreConfig,
    pub embed: EmbedConfig,
    #[serde(rename = "match")]
    pub matching: MatchConfig,
    /// The cameras `farsight run` reads (`[[camera]]`); `--source` replaces them.
    #[serde(rename = "camera", skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<CameraConfig>,
    pub pipeline: PipelineConfig,
    pub track: TrackConfig,
    pub sinks: SinksConfig,
    pub crops: CropsConfig,
    pub images: ImageLimits,
    pub service: ServiceConfig,
    pub scene: crate::scene::SceneConfig,
    pub http: crate::http::HttpConfig,
    pub visitors: crate::visitors::VisitorsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            models_dir: default_models_dir(),
            gallery: default_gallery(),
            detector: DetectorConfig::default(),
            restore: RestoreConfig::default(),
            embed: EmbedConfig::default(),
            matching: MatchConfig::default(),
            cameras: Vec::new(),
            pipeline: PipelineConfig::default(),
            track: TrackConfig::default(),
            sinks: SinksConfig::default(),
            crops: CropsConfig::default(),
            images: ImageLimits::default(),
            service: ServiceConfig::default(),
            scene: crate::scene::SceneConfig::default(),
            http: crate::http::HttpConfig::default(),
            visitors: crate::visitors::VisitorsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// Restorer for faces whose aligned crop spans fewer frame pixels than `below_px`.
    pub method: RestoreKind,
    pub below_px: f32,
    /// Restorer for faces from `below_px` up to 112 px. Faces of 112 px or more are aligned
    /// straight to 112x112 and never restored.
    pub fallback: RestoreKind,
}

impl Default for RestoreConfig {
    /// FTLGAN where it beats bicubic on LFW folds 6-10 (aligned crops under 28 px: +11.4% d' at
    /// 14 px), bicubic from 28 px, where FTLGAN no longer gains (-0.25% d' at 28 px) and would
    /// cost ~4 ms a face (models/MODELS.md, "ftlgan"). With the small-face path on (the default,
    /// `embed.small_face_below_px = 28`) every face under 28 px takes that path instead, so
    /// FTLGAN restores faces only where that path is turned off.
    fn default() -> Self {
        Self { method: RestoreKind::Ftlgan, below_px: 28.0, fallback: RestoreKind::Bicubic }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Cosine similarity at or above which the best candidate is reported as a match.
    pub threshold: f32,
    /// Candidates listed per face.
    pub top_k: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        // 0.363 is the OpenCV zoo's published same-person cosine threshold for SFace on aligned
        // faces; it was not tuned on the evaluation folds (6-10).
        Self { threshold: 0.363, top_k: 3 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not a TOML text file: {what} at line {line}, column {column} (is this the right file?)")]
    NotText { path: PathBuf, what: String, line: usize, column: usize },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {problems}", problems = .problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

impl Config {
    /// Reads and validates a config file (see [`Config::from_bytes`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates a config file's contents; `path` only names the source in messages.
    /// The file must be UTF-8 text: a binary or wrongly encoded file is refused with the position
    /// of the first bad byte. Never panics, whatever the bytes (fuzzed: `fuzz/`, `config_toml`).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.valid_up_to();
                let (line, column) = line_column(&bytes[..at]);
                let what = format!("byte 0x{:02X} is not UTF-8", bytes[at]);
                return Err(ConfigError::NotText { path: path.to_owned(), what, line, column });
            }
        };
        if let Some(at) = text.find('\0') {
            let (line, column) = line_column(&bytes[..at]);
            let what = "a NUL byte (a binary file?)".to_owned();
            return Err(ConfigError::NotText { path: path.to_owned(), what, line, column });
        }
        Self::parse(text, path)
    }

    /// Parses and validates TOML text; `path` only names the source in messages. A syntax or type
    /// error carries toml's line and column; every value problem is prefixed with the line of its
    /// key (`line 7: detector.max_side = 20 must be ...`).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid { path: path.to_owned(), problems: locate(text, problems) })
        }
    }

    /// Every problem with the values, empty when the config is usable. Pure: touches no file.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.version != CONFIG_VERSION {
            p.push(format!(
                "version = {} is not supported (this farsight reads version {CONFIG_VERSION})",
                self.version
            ));
        }
        let d = &self.detector;
        if !(d.score_threshold > 0.0 && d.score_threshold < 1.0) {
            p.push(format!("detector.score_threshold = {} must be between 0 and 1", d.score_threshold));
        }
        if !(d.nms_iou > 0.0 && d.nms_iou <= 1.0) {
            p.push(format!("detector.nms_iou = {} must be in (0, 1]", d.nms_iou));
        }
        if !(32..=8192).contains(&d.max_side) {
            p.push(format!("detector.max_side = {} must be between 32 and 8192", d.max_side));
        }
        if !(d.upscale >= 0.25 && d.upscale <= 8.0) {
            p.push(format!("detector.upscale = {} must be between 0.25 and 8", d.upscale));
        }
        if !(self.restore.below_px >= 0.0 && self.restore.below_px <= 1024.0) {
            p.push(format!("restore.below_px = {} must be between 0 and 1024", self.restore.below_px));
        }
        if !(self.matching.threshold >= -1.0 && self.matching.threshold <= 1.0) {
            p.push(format!("match.threshold = {} must be a cosine similarity in [-1, 1]", self.matching.threshold));
        }
        if self.matching.top_k == 0 || self.matching.top_k > 100 {
            p.push(format!("match.top_k = {} must be between 1 and 100", self.matching.top_k));
        }
        self.embed.validate(&mut p);
        self.images.validate(&mut p);
        self.service.validate(&mut p);
        self.scene.validate(&mut p);
        self.http.validate(&mut p);
        self.visitors.validate(&mut p);
        live::validate_cameras(&self.cameras, &mut p);
        live::validate_runtime(&self.pipeline, &self.track, &self.sinks, &self.crops, &mut p);
        p
    }
}

/// 1-based line and column (in characters) of the position just after `before`.
fn line_column(before: &[u8]) -> (usize, usize) {
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, String::from_utf8_lossy(&before[start..]).chars().count() + 1)
}

/// Prefixes each problem with the line of the key it is about. Problems are written key first
/// (`sinks.mqtt.port = 0 ...`, `camera[1] ("door"): url ...`): the leading key path is looked up
/// in the document; inside a camera, the field the message names after the colon, when the
/// camera sets it. A key the file does not set (a default made invalid by another key) gets no line.
pub(crate) fn locate(text: &str, problems: Vec<String>) -> Vec<String> {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else { return problems };
    problems
        .into_iter()
        .map(|problem| {
            let key: String = problem
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
                .collect();
            let field = problem.split_once(": ").and_then(|(_, rest)| rest.split([' ', ',']).next());
            match span_of(&doc, &key, field) {
                Some(start) => format!("line {}: {problem}", line_column(&text.as_bytes()[..start]).0),
                None => problem,
            }
        })
        .collect()
}

/// Byte offset where `key` (dotted, with `[i]` for arrays of tables) is set, or where the table
/// it names starts; inside an array entry, where `field` is set when the entry sets it.
fn span_of(doc: &toml_edit::ImDocument<&str>, key: &str, field: Option<&str>) -> Option<usize> {
    let mut item: &toml_edit::Item = doc.as_item();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        item = item.get(name)?;
        if let Some(i) = index {
            let toml_edit::Item::ArrayOfTables(array) = item else { return None };
            let table = array.get(i)?;
            let field_span = field.and_then(|f| table.key(f)).and_then(|k| k.span());
            return field_span.or_else(|| table.span()).map(|s| s.start);
        }
    }
    match item {
        toml_edit::Item::Table(t) => t.span(),
        other => other.span(),
    }
    .map(|s| s.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let cfg = Config::default();
        assert!(cfg.validate().is_empty());
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(Config::parse(&text, Path::new("x.toml")).unwrap(), cfg);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err =
            Config::parse("version = 1\n[detector]\nkind = \"centerface\"\nthreshhold = 0.4\n", Path::new("f.toml"))
                .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("threshhold") && msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn the_example_config_is_valid_as_shipped_and_with_every_section_uncommented() {
        let text = include_str!("../../farsight.example.toml");
        assert_eq!(Config::parse(text, Path::new("example.toml")).unwrap().cameras.len(), 0);
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.split_whitespace().nth(1) == Some("=") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::parse(&uncommented, Path::new("example.toml")).unwrap();
        assert_eq!(cfg.cameras.len(), 3);
        assert!(cfg.sinks.mqtt.is_some() && cfg.sinks.webhook.is_some() && cfg.sinks.sqlite.is_some());
    }

    #[test]
    fn camera_mistakes_are_reported_with_the_camera() {
        let text = "version = 1\n[[camera]]\nname = \"a b\"\nurl = \"http://x\"\n[[camera]]\nname = \"c\"\nurl = \"c.mp4\"\nfps = 5\n";
        let err = Config::parse(text, Path::new("f.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("expected Invalid, got {err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("V4L2 cameras only")), "{problems:?}");
    }

    #[test]
    fn small_face_keys_are_validated_with_their_line() {
        let text = "version = 1\n[embed]\nsmall_face_embedder = \"lrembed\"\nsmall_face_below_px = 200\n\
                    small_face_threshold = 1.5\n";
        let err = Config::parse(text, Path::new("f.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("expected Invalid, got {err}") };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 4: embed.small_face_below_px = 200"), "{problems:?}");
        assert!(problems[1].starts_with("line 5: embed.small_face_threshold = 1.5"), "{problems:?}");
        let err = Config::parse("version = 1\n[embed]\nsmall_face_embedder = \"lrembd\"\n", Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lrembd") && err.contains("sface") && err.contains("lrembed"), "{err}");
        let off =
            Config::parse("version = 1\n[embed]\nsmall_face_embedder = \"sface\"\n", Path::new("f.toml")).unwrap();
        assert_eq!(off.embed.small_face(), None, "sface turns the small-face path off");
        assert_eq!(Config::default().embed.small_face(), Some(crate::embed::EmbedderKind::Lrembed));
    }

    #[test]
    fn every_bad_value_is_reported() {
        let err =
            Config::parse("version = 2\n[detector]\nscore_threshold = 1.5\n[match]\ntop_k = 0\n", Path::new("f.toml"))
                .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("expected Invalid, got {err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
