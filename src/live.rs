//! `farsight run`, `farsight serve` and `farsight status`: the daemon's edge. Everything that can be checked
//! before starting is, by the same [`daemon::prepare`] that `farsight validate` runs, so a mistake
//! fails at start with what to fix; once running, cameras and sinks retry on their own.

use anyhow::{bail, Context, Result};
use farsight::config::CameraConfig;
use farsight::daemon;
use farsight::http::{Hub, Server, ServerContext};
use farsight::pipeline::{self, PipelineOptions};
use farsight::sink::Sinks;
use farsight::stats::LiveState;
use farsight::Config;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the sinks may take to deliver what is queued at shutdown.
const SINK_DRAIN: Duration = Duration::from_secs(10);

/// How long requests in progress may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// The bundled sample photos (`scripts/fetch-samples.sh`): the README demo's default camera.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");

/// What the command line says over the config file (applied again to a config re-read on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub sources: Vec<OsString>,
    pub gallery: Option<PathBuf>,
    pub live: bool,
    /// `--http-bind`: `[http] bind` for this run.
    pub http_bind: Option<String>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if let Some(g) = &self.gallery {
            config.gallery = g.clone();
        }
        if !self.sources.is_empty() {
            config.cameras = self.sources.iter().map(|s| CameraConfig::from_arg(s)).collect();
            dedupe_names(&mut config.cameras);
        }
        if self.live {
            config.cameras.iter_mut().for_each(|c| c.live = Some(true));
        }
        if let Some(bind) = &self.http_bind {
            config.http.bind = bind.clone();
        }
    }
}

pub fn run(
    mut config: Config,
    config_path: Option<&Path>,
    overrides: Overrides,
    summary: Option<&Path>,
    detections: Option<&Path>,
) -> Result<()> {
    overrides.apply(&mut config);
    demo_cameras(&mut config, config_path.is_some())?;
    if overrides.live {
        config.cameras.iter_mut().for_each(|c| c.live = Some(true));
    }
    let prepared = daemon::prepare(config, true)?;
    let config = prepared.config;
    if prepared.identities.is_none() {
        log::warn!(
            "gallery {} does not exist yet: every face is unknown until someone is enrolled (picked up while running)",
            config.gallery.display()
        );
    }
    let camera_names: Vec<String> = config.cameras.iter().map(|c| c.name.clone()).collect();
    let sinks =
        Sinks::start_announcing(&config.sinks, &config.gallery, &camera_names).context("starting the event sinks")?;

    let stop = stop_on_signals()?;
    let hub = Arc::new(Hub::default());
    let live_state = Arc::new(LiveState::default());
    let server = if config.http.enabled {
        let cx = server_context(&config, prepared.recognizer.clone(), &hub, &live_state, &stop, true);
        Some(Server::start(cx).context("starting the HTTP server ([http] enabled = false turns it off)")?)
    } else {
        None
    };
    // SIGHUP (systemd's ExecReload): re-read the config at the tracker's next tick.
    let reload_requested = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload_requested.clone())
        .context("installing the SIGHUP handler")?;
    let reload: Option<pipeline::ReloadFn> = config_path.map(|path| {
        let (path, started, overrides) = (path.to_owned(), config.clone(), overrides.clone());
        Box::new(move || {
            let mut new = Config::load(&path).map_err(|e| farsight::error_chain(&e))?;
            overrides.apply(&mut new);
            daemon::reload(&started, new).map_err(|e| e.0.join("; "))
        }) as pipeline::ReloadFn
    });
    let supervision = pipeline::Supervision {
        notifier: farsight::service::Notifier::from_env(&config.service),
        stall_after: Duration::from_secs_f32(config.service.stall_after_s),
        reload_requested,
        reload,
        live: live_state,
    };
    #[cfg(feature = "gst")]
    farsight::source::gst::set_h264_decoder(config.pipeline.h264_decoder);
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
        small_face_threshold: config.embed.small_face_threshold,
        top_k: config.matching.top_k,
        gallery: config.gallery.clone(),
        status_interval: Duration::from_secs_f32(config.pipeline.status_interval_s),
        status_file: Some(daemon::status_path(&config)),
        scene: config.scene.clone(),
        detections: detections.map(Path::to_owned),
        visitors: config.visitors.clone(),
    };
    log::info!("{} camera(s), {workers} recognition worker(s)", config.cameras.len());
    let result = pipeline::run(
        prepared.recognizer,
        prepared.cameras,
        &opts,
        |e| {
            hub.publish(&e);
            sinks.publish(e)
        },
        sinks.stats(),
        stop.clone(),
        supervision,
    );
    // From here on the HTTP server refuses writes; it answers reads until the sinks are drained.
    stop.store(true, Ordering::Relaxed);
    let delivery = sinks.close(SINK_DRAIN);
    if let Some(server) = server {
        server.shutdown(HTTP_DRAIN);
    }
    let summary_report = result?;
    let heap = farsight::heap::stats();
    log::info!(
        "finished in {:.1}s: {} events; peak RSS {} MiB (big-block heap: {} MiB high water, {} MiB live); sinks: {delivery:?}",
        summary_report.wall.as_secs_f64(),
        summary_report.events,
        summary_report.peak_rss_kib.map_or("?".to_owned(), |k| (k / 1024).to_string()),
        heap.high_water >> 20,
        heap.live >> 20,
    );
    if let Some(path) = summary {
        let frames = summary_report.stages.iter().find(|s| s.name == "recognize").map_or(0, |s| s.output);
        let json = serde_json::json!({
            "wall_s": summary_report.wall.as_secs_f64(),
            "frames_recognized": frames,
            "fps": frames as f64 / summary_report.wall.as_secs_f64().max(1e-9),
            "events": summary_report.events,
            "cpu_s": summary_report.cpu.as_secs_f64(),
            "cpu_ms_per_frame": summary_report.cpu.as_secs_f64() * 1000.0
                / summary_report.stages.iter().find(|s| s.name.starts_with("camera-")).map_or(1, |s| s.input.max(1)) as f64,
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

/// SIGINT and SIGTERM set the returned flag: the first asks for a drain; a second one while
/// draining exits at once (128 + signal).
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

/// What the HTTP server serves from, for `run` (`pipeline`) or `serve`.
fn server_context(
    config: &Config,
    recognizer: Arc<farsight::Recognizer>,
    hub: &Arc<Hub>,
    live: &Arc<LiveState>,
    stop: &Arc<AtomicBool>,
    pipeline: bool,
) -> ServerContext {
    ServerContext {
        http: config.http.clone(),
        images: config.images,
        gallery: config.gallery.clone(),
        threshold: config.matching.threshold,
        top_k: config.matching.top_k,
        events_stored: config.sinks.sqlite.is_some(),
        crops: config.crops.enabled.then(|| config.crops.dir.clone()),
        recognizer,
        hub: hub.clone(),
        live: live.clone(),
        pipeline,
        stop: stop.clone(),
    }
}

/// `farsight serve`: the HTTP server alone (no camera), until SIGINT or SIGTERM.
pub fn serve(mut config: Config, gallery: Option<PathBuf>, bind: Option<String>) -> Result<()> {
    if let Some(g) = gallery {
        config.gallery = g;
    }
    if let Some(bind) = bind {
        config.http.bind = bind;
    }
    // `[http] enabled` is about `run`; `serve` is asked for explicitly, and checked as if enabled.
    config.http.enabled = true;
    let prepared = daemon::prepare_serve(config)?;
    let config = prepared.config;
    let stop = stop_on_signals()?;
    let (hub, live) = (Arc::new(Hub::default()), Arc::new(LiveState::default()));
    let cx = server_context(&config, prepared.recognizer, &hub, &live, &stop, false);
    let server = Server::start(cx).context("starting the HTTP server")?;
    eprintln!(
        "farsight serve: http://{} (gallery {}); stop with Ctrl-C",
        server.local_addr(),
        config.gallery.display()
    );
    let mut last_release = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_release.elapsed() >= farsight::heap::RELEASE_EVERY {
            last_release = std::time::Instant::now();
            farsight::heap::release_free_pages();
        }
    }
    log::info!("stopping: answering what is in progress, refusing writes");
    server.shutdown(HTTP_DRAIN);
    Ok(())
}

/// The README demo's default: without a config file and without `--source`, `run` (and
/// `validate`) read the bundled samples. A config file with no cameras is a mistake, not a demo:
/// the start-up check refuses it.
pub fn demo_cameras(config: &mut Config, config_given: bool) -> Result<()> {
    if config.cameras.is_empty() && !config_given {
        if !Path::new(SAMPLES).exists() {
            bail!("no cameras configured and the bundled samples are missing: run scripts/fetch-samples.sh, give --source, or add [[camera]] sections to a config file");
        }
        config.cameras = vec![CameraConfig { name: "samples".to_owned(), ..CameraConfig::from_url(SAMPLES) }];
    }
    Ok(())
}

pub fn status(config: &Config, file: Option<PathBuf>) -> Result<()> {
    let path = file.unwrap_or_else(|| daemon::status_path(config));
    let report = pipeline::read_status(&path).with_context(|| {
        format!("reading status file {} (is farsight run going, with the same config?)", path.display())
    })?;
    let age = farsight::frame::unix_ms(std::time::SystemTime::now()).saturating_sub(report.updated_ms);
    println!("{}", report.summary_line());
    println!("(written {:.0}s ago; peak RSS {} KiB)", age as f64 / 1000.0, report.peak_rss_kib.unwrap_or(0));
    Ok(())
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
