//! Configuration: a versioned TOML file (`deny_unknown_fields`, defaults for everything), checked
//! by a pure [`Config::validate`] before anything is built. `farsight validate --config F` runs the
//! same checks. Without a file, [`Config::default`] is the embedded default the README demo uses.

mod live;

pub use live::{
    CameraConfig, CropsConfig, MqttSinkConfig, PipelineConfig, SinksConfig, SqliteSinkConfig, TrackConfig,
    WebhookSinkConfig,
};

use crate::detect::DetectorConfig;
use crate::restore::RestoreKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Where the models are when the config does not say: the `models/` folder of the source tree
/// this binary was built from (a packaged install sets `models_dir`).
pub const DEFAULT_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// Default gallery database, relative to the working directory.
pub const DEFAULT_GALLERY: &str = "farsight-gallery.db";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    pub models_dir: PathBuf,
    pub gallery: PathBuf,
    pub detector: DetectorConfig,
    pub restore: RestoreConfig,
    #[serde(rename = "match")]
    pub matching: MatchConfig,
    /// The cameras `farsight run` reads (`[[camera]]`); `--source` replaces them.
    #[serde(rename = "camera", skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<CameraConfig>,
    pub pipeline: PipelineConfig,
    pub track: TrackConfig,
    pub sinks: SinksConfig,
    pub crops: CropsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            models_dir: PathBuf::from(DEFAULT_MODELS_DIR),
            gallery: PathBuf::from(DEFAULT_GALLERY),
            detector: DetectorConfig::default(),
            restore: RestoreConfig::default(),
            matching: MatchConfig::default(),
            cameras: Vec::new(),
            pipeline: PipelineConfig::default(),
            track: TrackConfig::default(),
            sinks: SinksConfig::default(),
            crops: CropsConfig::default(),
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
    /// FTLGAN where it beats bicubic on LFW folds 6-10 in both evaluation modes (aligned crops
    /// under ~32 px: +3.3% d' at 14 px crop, +0.9% at a 14 px face box, ~19 aligned px), bicubic
    /// above, where FTLGAN's gain is within ±0.3% and would cost ~4 ms a face
    /// (models/MODELS.md, "ftlgan").
    fn default() -> Self {
        Self { method: RestoreKind::Ftlgan, below_px: 32.0, fallback: RestoreKind::Bicubic }
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
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {problems}", problems = .problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` only names the source in messages (toml's message
    /// carries the line and column).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid { path: path.to_owned(), problems })
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
        live::validate_cameras(&self.cameras, &mut p);
        live::validate_runtime(&self.pipeline, &self.track, &self.sinks, &self.crops, &mut p);
        p
    }
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
    fn every_bad_value_is_reported() {
        let err =
            Config::parse("version = 2\n[detector]\nscore_threshold = 1.5\n[match]\ntop_k = 0\n", Path::new("f.toml"))
                .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else { panic!("expected Invalid, got {err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
