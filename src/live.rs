//! `farsight run` and `farsight status`: the camera daemon's edge. Everything that can be checked
//! before starting is (configuration, camera urls and files, models, the gallery, the sinks), so a
//! mistake fails at start with what to fix; once running, cameras and sinks retry on their own.

use anyhow::{bail, Context, Result};
use farsight::config::CameraConfig;
use farsight::gallery::{Gallery, OpenMode};
use farsight::pipeline::{self, Camera, PipelineOptions};
use farsight::sink::Sinks;
use farsight::source::{open_source, SourceSpec};
use farsight::{Config, Recognizer};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How long the sinks may take to deliver what is queued at shutdown.
const SINK_DRAIN: Duration = Duration::from_secs(10);

/// The bundled sample photos (`scripts/fetch-samples.sh`): the README demo's default camera.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");

pub fn run(
    mut config: Config,
    sources: Vec<String>,
    gallery: Option<PathBuf>,
    live: bool,
    summary: Option<&Path>,
) -> Result<()> {
    if let Some(g) = gallery {
        config.gallery = g;
    }
    if !sources.is_empty() {
        config.cameras = sources.iter().map(|s| CameraConfig::from_url(s)).collect();
        dedupe_names(&mut config.cameras);
    } else if config.cameras.is_empty() {
        if !Path::new(SAMPLES).exists() {
            bail!("no cameras configured and the bundled samples are missing: run scripts/fetch-samples.sh, give --source, or add [[camera]] sections to the config");
        }
        config.cameras = vec![CameraConfig { name: "samples".to_owned(), ..CameraConfig::from_url(SAMPLES) }];
    }
    if live {
        config.cameras.iter_mut().for_each(|c| c.live = Some(true));
    }
    let problems = config.validate();
    if !problems.is_empty() {
        bail!("invalid settings: {}", problems.join("; "));
    }
    for cam in &config.cameras {
        check_camera(cam)?;
    }

    let recognizer = Arc::new(Recognizer::load(&config).context("loading the models")?);
    if config.gallery.exists() {
        // A corrupt or foreign gallery fails now, not on the first face.
        Gallery::open(&config.gallery, OpenMode::MustExist, Some(recognizer.embedder().id()))?;
    } else {
        log::warn!(
            "gallery {} does not exist yet: every face is unknown until someone is enrolled (picked up while running)",
            config.gallery.display()
        );
    }
    let mut cameras = Vec::new();
    for cam in &config.cameras {
        let source = open_source(cam).with_context(|| format!("camera {}", cam.name))?;
        cameras.push(Camera { config: cam.clone(), source });
    }
    let sinks = Sinks::start(&config.sinks, &config.gallery).context("starting the event sinks")?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing the signal handlers")?;
    }
    let workers = match config.pipeline.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let opts = PipelineOptions {
        workers,
        frame_queue: config.pipeline.frame_queue,
        track: config.track.clone(),
        crops: config.crops.clone(),
        threshold: config.matching.threshold,
        top_k: config.matching.top_k,
        gallery: config.gallery.clone(),
        status_interval: Duration::from_secs_f32(config.pipeline.status_interval_s),
        status_file: Some(status_path(&config)),
    };
    log::info!("{} camera(s), {workers} recognition worker(s)", config.cameras.len());
    let result = pipeline::run(recognizer, cameras, &opts, |e| sinks.publish(e), sinks.stats(), stop);
    let delivery = sinks.close(SINK_DRAIN);
    let summary_report = result?;
    log::info!(
        "finished in {:.1}s: {} events; peak RSS {} MiB; sinks: {delivery:?}",
        summary_report.wall.as_secs_f64(),
        summary_report.events,
        summary_report.peak_rss_kib.map_or("?".to_owned(), |k| (k / 1024).to_string()),
    );
    if let Some(path) = summary {
        let frames = summary_report.stages.iter().find(|s| s.name == "recognize").map_or(0, |s| s.output);
        let json = serde_json::json!({
            "wall_s": summary_report.wall.as_secs_f64(),
            "frames_recognized": frames,
            "fps": frames as f64 / summary_report.wall.as_secs_f64().max(1e-9),
            "events": summary_report.events,
            "peak_rss_kib": summary_report.peak_rss_kib,
            "cameras": summary_report.cameras.iter().map(|(n, e)| (n.clone(), format!("{e:?}"))).collect::<Vec<_>>(),
            "stages": summary_report.stages,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing the run summary {}", path.display()))?;
    }
    if summary_report.any_failed() {
        bail!("a camera could not be read to its end (see the log above)");
    }
    Ok(())
}

pub fn status(config: &Config, file: Option<PathBuf>) -> Result<()> {
    let path = file.unwrap_or_else(|| status_path(config));
    let report = pipeline::read_status(&path).with_context(|| {
        format!("reading status file {} (is farsight run going, with the same config?)", path.display())
    })?;
    let age = farsight::frame::unix_ms(std::time::SystemTime::now()).saturating_sub(report.updated_ms);
    println!("{}", report.summary_line());
    println!("(written {:.0}s ago; peak RSS {} KiB)", age as f64 / 1000.0, report.peak_rss_kib.unwrap_or(0));
    Ok(())
}

fn status_path(config: &Config) -> PathBuf {
    config.pipeline.status_file.clone().unwrap_or_else(|| {
        let mut name = config.gallery.file_name().unwrap_or_default().to_os_string();
        name.push(".status.json");
        config.gallery.with_file_name(name)
    })
}

/// Files and folders must exist at start; cameras may come and go.
fn check_camera(cam: &CameraConfig) -> Result<()> {
    match cam.spec() {
        Ok(SourceSpec::Video { path } | SourceSpec::Images { path }) if !path.exists() => {
            bail!("camera {}: {} does not exist", cam.name, path.display())
        }
        Ok(_) => Ok(()),
        Err(e) => bail!("camera {}: {e}", cam.name),
    }
}

/// `--source a/x.mp4 --source b/x.mp4` would name both cameras `x`: number the repeats.
fn dedupe_names(cameras: &mut [CameraConfig]) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for c in cameras.iter_mut() {
        c.name =
            c.name.chars().take(48).map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' { ch } else { '_' }).collect();
        let n = seen.entry(c.name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            c.name = format!("{}-{n}", c.name);
        }
    }
}
