//! Command-line definitions (clap). Each subcommand maps to one function in `commands.rs`.

use clap::{Parser, Subcommand};
use farsight::detect::DetectorKind;
use farsight::embed::EmbedderKind;
use farsight::eval::{EvalRestore, Mode};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "farsight",
    about = "Recognise people from faces too small for ordinary face recognition",
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the version, the git commit and the sha256 of every model file, then exit.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// TOML configuration (see farsight.example.toml); built-in defaults when absent.
    #[arg(long, global = true, env = "FARSIGHT_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the cameras continuously and send one event per person-visit (track) to the sinks
    /// (stdout JSON lines by default). Files end at their last frame; cameras run until SIGINT or
    /// SIGTERM, then the pipeline drains and the sinks flush.
    Run {
        /// A camera url or path (rtsp://..., file:///video.mp4, v4l2:///dev/video0, an image or a
        /// folder of images), instead of the config's cameras; repeatable. Default without a
        /// config: the bundled samples/ folder.
        #[arg(long)]
        source: Vec<std::ffi::OsString>,
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Treat --source as live (drop frames when behind) even if it is a file: simulates a
        /// camera from a recording.
        #[arg(long)]
        live: bool,
        /// Write the run's final counters (frames, drops, latency p50/p99, peak RSS) to this JSON
        /// file at the end (for benchmarks).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Write every frame's detections (boxes, scores, whether embedded, windows searched) as
        /// JSON lines to this file (for benchmarks against a ground truth).
        #[arg(long)]
        detections: Option<PathBuf>,
        /// Serve HTTP on this ADDR:PORT instead of `[http] bind` (port 0: any free port, logged).
        #[arg(long, env = "FARSIGHT_HTTP_BIND", value_name = "ADDR:PORT")]
        http_bind: Option<String>,
    },
    /// Run the HTTP server (gallery API, identify, events, metrics) without reading any camera.
    Serve {
        /// Gallery database to serve (default: the config's `gallery`).
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Listen on this ADDR:PORT instead of `[http] bind`.
        #[arg(long, value_name = "ADDR:PORT")]
        bind: Option<String>,
    },
    /// Show a running (or finished) farsight's counters from its status file.
    Status {
        /// Status file (default: pipeline.status_file, else <gallery>.status.json).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Add an identity (or more photos of one) to the gallery; each image must show one face.
    Enroll {
        #[arg(long)]
        gallery: Option<PathBuf>,
        #[arg(long)]
        name: String,
        /// When an image shows several faces, use the largest instead of refusing the image.
        #[arg(long)]
        largest: bool,
        /// Create the gallery's folder if it does not exist (without it, a missing folder is
        /// refused: a typo must not start a new gallery elsewhere).
        #[arg(long)]
        create_dir: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List, remove or rename gallery identities.
    Gallery {
        #[arg(long)]
        gallery: Option<PathBuf>,
        #[command(subcommand)]
        action: GalleryAction,
    },
    /// Show the best gallery candidates for every face in the given images.
    Identify {
        #[arg(long)]
        gallery: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Verification accuracy on an LFW-layout dataset at several face sizes and restorers.
    Eval {
        /// Dataset folder: DIR/<Name>/<Name>_NNNN.jpg.
        #[arg(long)]
        dataset: PathBuf,
        /// Pairs file in the LFW View 2 format.
        #[arg(long)]
        pairs: PathBuf,
        /// Folds to evaluate, e.g. 6-10 (default: every fold in the pairs file).
        #[arg(long)]
        folds: Option<String>,
        /// Probe face sizes in pixels, 2-112 (112: full resolution).
        #[arg(long, value_delimiter = ',', default_value = "7,14,28,56,112", value_parser = probe_size())]
        sizes: Vec<u32>,
        /// Restorers to compare; `shipped` is what `farsight run` does with the config (restore
        /// policy and small-face path together; its rows say "restore": "shipped").
        #[arg(long = "restore", value_delimiter = ',', default_value = "none,bicubic")]
        restorers: Vec<EvalRestore>,
        /// Probe embedders crossed with every restorer but `shipped` (references are always SFace).
        #[arg(long = "embedder", value_delimiter = ',', default_value = "sface")]
        embedders: Vec<EmbedderKind>,
        /// crop: degrade the aligned face; frame: shrink the whole image and detect (comma-separated).
        #[arg(long = "mode", value_delimiter = ',', default_value = "crop")]
        modes: Vec<Mode>,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write ROC curves as a PNG.
        #[arg(long)]
        roc: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Use only the first N genuine and N impostor pairs of each fold (quick checks).
        #[arg(long)]
        max_pairs_per_fold: Option<usize>,
    },
    /// What fusing a track's frames buys at a small face size: LFW pairs whose probe side is a
    /// track of up to K frames, each an independent degradation of a different photo of the
    /// person, scored by the pair's own frame, the best frame, the tracker's fusion and
    /// alternatives at every track length. Heavy: minutes.
    EvalFusion {
        /// Dataset folder: DIR/<Name>/<Name>_NNNN.jpg.
        #[arg(long, default_value = "../shared/datasets/lfw")]
        dataset: PathBuf,
        /// Pairs file in the LFW View 2 format.
        #[arg(long, default_value = "../shared/datasets/lfw-pairs.txt")]
        pairs: PathBuf,
        /// Folds measured; the tracks' photos come from these folds' images.
        #[arg(long, default_value = "6-10")]
        folds: String,
        /// Probe face size in pixels, 2-112.
        #[arg(long, default_value_t = 14, value_parser = probe_size())]
        size: u32,
        /// crop: degrade the aligned face; frame: shrink the whole image and detect (comma-separated).
        #[arg(long = "mode", value_delimiter = ',', default_value = "crop,frame")]
        modes: Vec<Mode>,
        /// Longest probe track (K frames).
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Exponents p of the quality^p weightings compared with the tracker's (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "2")]
        quality_powers: Vec<f32>,
        /// Seed of the track order and of every frame's degradation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// different: other photos of the person (the measurement); repeat: the pair's second
        /// image K times (every fusion must then equal the single frame).
        #[arg(long, default_value = "different")]
        photos: farsight::eval::fusion::Photos,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Use only the first N genuine and N impostor pairs of each fold (quick checks).
        #[arg(long)]
        max_pairs_per_fold: Option<usize>,
    },
    /// Calibrate the visitor threshold on some LFW folds and measure the online clustering of
    /// unknown faces into visitors on others (pairwise and BCubed precision/recall), at full
    /// resolution and at small probe sizes (the product's small-face path). Heavy: minutes.
    EvalVisitors {
        /// Dataset folder: DIR/<Name>/<Name>_NNNN.jpg.
        #[arg(long, default_value = "../shared/datasets/lfw")]
        dataset: PathBuf,
        /// Pairs file in the LFW View 2 format.
        #[arg(long, default_value = "../shared/datasets/lfw-pairs.txt")]
        pairs: PathBuf,
        /// Folds the thresholds are calibrated on.
        #[arg(long, default_value = "1-5")]
        calibrate_folds: String,
        /// Folds the clustering is measured on (disjoint from the calibration folds).
        #[arg(long, default_value = "6-10")]
        folds: String,
        /// Probe sizes in aligned pixels (112: full resolution; smaller: downsampled, then the
        /// small-face path).
        #[arg(long, value_delimiter = ',', default_value = "112,24", value_parser = probe_size())]
        sizes: Vec<u32>,
        /// False-accept rates to calibrate at (the clustering is measured at each).
        #[arg(long, value_delimiter = ',', default_value = "1e-3,1e-4")]
        far: Vec<f64>,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Per-stage latency and end-to-end throughput, as medians and as ratios to a reference workload.
    Bench {
        /// A real photo with a face (default: samples/obama.jpg).
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long, default_value_t = 30)]
        iterations: usize,
        /// Time single model files instead: a JSON list of {name, model, shape, input, expect}
        /// (what `scripts/bench/models.py` writes to compare tract with onnxruntime).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Recall by face size against cost for these region detectors instead (comma-separated;
        /// issue 14's table): LFW photos pasted into 640x480 frames with faces 10-24 px wide,
        /// searched as the streaming pipeline searches windows and frames, with and without 2x
        /// magnification. Prints Markdown tables (see scripts/bench/README.md).
        #[arg(long, value_delimiter = ',', conflicts_with = "models")]
        detectors: Vec<DetectorKind>,
        /// With --detectors: LFW-layout dataset folder.
        #[arg(long, default_value = "../shared/datasets/lfw")]
        dataset: PathBuf,
        /// With --detectors: LFW pairs file (the identities of --folds are used).
        #[arg(long, default_value = "../shared/datasets/lfw-pairs.txt")]
        pairs: PathBuf,
        /// With --detectors: folds whose identities are pasted.
        #[arg(long, default_value = "6-10")]
        folds: String,
        /// With --detectors: face widths in frame pixels.
        #[arg(long, value_delimiter = ',', default_value = "10,12,14,16,20,24")]
        sizes: Vec<u32>,
        /// With --detectors: faces (photos) per size.
        #[arg(long, default_value_t = 240)]
        faces: usize,
        /// With --detectors: seed of the background and the paste jitter.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With --models or --detectors: write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// With --models: also time every node of each plan (tract's operators, slowest first).
        #[arg(long, requires = "models")]
        profile: bool,
    },
    /// Write farsight-aligned 112x112 faces of an LFW-layout dataset as PNG (training data for
    /// the restoration model); identities of the excluded folds are never written.
    ExportAligned {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long)]
        pairs: PathBuf,
        /// Folds whose identities must not be exported (the evaluation folds).
        #[arg(long, default_value = "6-10")]
        exclude_folds: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the configuration (and that the models load) without running anything.
    Validate,
}

#[derive(Debug, Subcommand)]
pub enum GalleryAction {
    /// Identities with their template counts.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an identity and all its templates.
    Remove { name: String },
    /// Rename an identity.
    Rename { from: String, to: String },
}

/// A probe size the evaluations can make: 2 to 112 aligned pixels (a 0 px probe used to panic
/// deep in the resampler).
fn probe_size() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(2..=112)
}
