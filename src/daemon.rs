//! Start-up: everything `farsight run` needs is checked, and built where building is the check,
//! before any thread starts. `farsight validate` (what systemd runs before start and reload) calls
//! the same [`prepare`], so it refuses exactly what `run` would refuse: the configuration's values,
//! the cameras (a file or folder that is not there, a url that cannot work), the models (missing,
//! corrupt or of the wrong kind), the gallery (corrupt, foreign, of another embedder, or in a
//! folder that is missing or read-only), the status file's and crops' folders, and the sinks'
//! files (an MQTT `ca_file`). Every problem is collected, so one run of `validate` lists them all.
//! Nothing is connected to (a broker that is down at boot is retried once running) and nothing is
//! written but a probe file that is removed at once (and, when `create` is asked, the crops
//! folder).

use crate::config::{CameraConfig, Config};
use crate::gallery::{Gallery, OpenMode};
use crate::pipeline::{check_writable, prepare_crops_dir, Camera, Reloaded};
use crate::recognize::Recognizer;
use crate::source::{open_source, SourceSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every reason the daemon cannot start, each saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot start:\n  {}", .0.join("\n  "))]
pub struct Problems(pub Vec<String>);

/// A daemon ready to run: the models loaded once, each camera's source built (not yet opened).
pub struct Prepared {
    pub config: Config,
    pub recognizer: Arc<Recognizer>,
    pub cameras: Vec<Camera>,
    /// Identities in the gallery at start (`None`: no gallery yet; created by the first enroll).
    pub identities: Option<usize>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("cameras", &self.cameras.len()).field("identities", &self.identities).finish()
    }
}

/// The status file's path: `pipeline.status_file`, else `<gallery>.status.json`.
pub fn status_path(config: &Config) -> PathBuf {
    config.pipeline.status_file.clone().unwrap_or_else(|| {
        let mut name = config.gallery.file_name().unwrap_or_default().to_os_string();
        name.push(".status.json");
        config.gallery.with_file_name(name)
    })
}

/// Checks everything `run` needs and builds the recognizer and the camera sources. `create`:
/// also make what start-up makes (the crops folder); `validate` passes false.
pub fn prepare(config: Config, create: bool) -> Result<Prepared, Problems> {
    let mut p = config.validate();
    if config.cameras.is_empty() {
        p.push("no cameras: add [[camera]] sections to the config (or give `run --source URL`)".to_owned());
    }
    for cam in &config.cameras {
        check_camera(cam, &mut p);
    }
    check_state_paths(&config, create, &mut p);
    if let Some(mqtt) = &config.sinks.mqtt {
        if let Some(ca) = &mqtt.ca_file {
            if let Err(e) = crate::sink::mqtt::read_pem(ca) {
                p.push(format!("sinks.mqtt.ca_file: {e}"));
            }
        }
    }
    let (recognizer, identities) = load_models_and_gallery(&config, &mut p);
    let mut cameras = Vec::new();
    for cam in &config.cameras {
        match open_source(cam, &config.images) {
            Ok(source) => cameras.push(Camera { config: cam.clone(), source }),
            Err(e) => p.push(format!("camera {}: {}", cam.name, crate::error_chain(&e))),
        }
    }
    match recognizer {
        Some(mut rec) if p.is_empty() => {
            // Checked above; video never uses it (its windows run `scene.detector`), and the
            // first photo sent over HTTP loads it again.
            rec.release_photo_detector();
            // Start-up's transients (parsed files, the optimiser's copies of weights, the probe
            // runs) are freed by now; their pages would otherwise stay resident under the run.
            crate::heap::release_free_pages();
            Ok(Prepared { config, recognizer: Arc::new(rec), cameras, identities })
        }
        _ => Err(Problems(p)),
    }
}

/// The models, loaded (each checked on a probe input), and the gallery's identity count when it
/// exists (a corrupt, foreign or other-embedder gallery is a problem).
fn load_models_and_gallery(config: &Config, p: &mut Vec<String>) -> (Option<Recognizer>, Option<usize>) {
    let recognizer = match Recognizer::load(config) {
        Ok(r) => Some(r),
        Err(e) => {
            p.push(format!("models: {}", crate::error_chain(&e)));
            None
        }
    };
    let mut identities = None;
    if let Some(rec) = &recognizer {
        if config.gallery.exists() {
            match Gallery::open(&config.gallery, OpenMode::MustExist, Some(rec.embedder().id())).and_then(|g| g.list())
            {
                Ok(list) => identities = Some(list.len()),
                Err(e) => p.push(crate::error_chain(&e)),
            }
        }
    }
    (recognizer, identities)
}

/// What `farsight serve` (the HTTP server without cameras) needs, checked like [`prepare`]: the
/// configuration's values (`[http]` included; cameras are not read), the gallery's folder, the
/// models and the gallery.
pub fn prepare_serve(config: Config) -> Result<Prepared, Problems> {
    let mut p = config.validate();
    let gallery_only = Config { cameras: Vec::new(), crops: Default::default(), ..config.clone() };
    check_state_paths(&gallery_only, false, &mut p);
    let (recognizer, identities) = load_models_and_gallery(&config, &mut p);
    match recognizer {
        Some(rec) if p.is_empty() => {
            Ok(Prepared { config, recognizer: Arc::new(rec), cameras: Vec::new(), identities })
        }
        _ => Err(Problems(p)),
    }
}

/// Files and folders must exist at start (cameras may come and go; files may not).
fn check_camera(cam: &CameraConfig, p: &mut Vec<String>) {
    match cam.spec() {
        Ok(SourceSpec::Video { path }) if !path.is_file() => {
            p.push(format!("camera {}: video file {} does not exist", cam.name, path.display()))
        }
        Ok(SourceSpec::Images { path }) if !path.exists() => {
            p.push(format!("camera {}: {} does not exist", cam.name, path.display()))
        }
        Ok(_) => {}
        // Already reported by `Config::validate` with the camera's line.
        Err(_) => {}
    }
}

/// The gallery, the status file and the crops folder must be creatable where the config puts them.
fn check_state_paths(config: &Config, create: bool, p: &mut Vec<String>) {
    let folder_of =
        |file: &Path| file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let mut check_file = |what: &str, file: &Path| {
        let dir = folder_of(file);
        if !dir.is_dir() {
            p.push(format!("{what} {}: its folder {} does not exist", file.display(), dir.display()));
        } else if let Err(e) = check_writable(&dir) {
            p.push(format!("{what} {}: cannot write in {} ({e})", file.display(), dir.display()));
        } else if file.is_dir() {
            p.push(format!("{what} {} is a folder", file.display()));
        }
    };
    check_file("gallery", &config.gallery);
    check_file("status file", &status_path(config));
    if config.visitors.enabled && config.gallery.is_file() {
        if let Err(e) = std::fs::OpenOptions::new().write(true).open(&config.gallery) {
            p.push(format!(
                "gallery {} cannot be written ({e}): [visitors] keeps unknown faces there; make it writable or set \
                 [visitors] enabled = false",
                config.gallery.display()
            ));
        }
    }
    if config.crops.enabled {
        let sources: Vec<PathBuf> = config
            .cameras
            .iter()
            .filter_map(|c| match c.spec() {
                // Only a folder camera reads a folder (and would read crops written into it).
                Ok(SourceSpec::Images { path }) if path.is_dir() => Some(path),
                _ => None,
            })
            .collect();
        if let Err(e) = prepare_crops_dir(&config.crops.dir, &sources, create) {
            p.push(e);
        }
    }
}

/// Checks a configuration re-read on SIGHUP against the one the daemon started with: its values,
/// cameras and state paths must pass the same checks as at start (models are not reloaded). What
/// can change while running (match, track, crops) comes back in [`Reloaded`]; a change to anything
/// else is named in its notes as waiting for a restart.
pub fn reload(started: &Config, new: Config) -> Result<Reloaded, Problems> {
    let mut p = new.validate();
    if new.cameras.is_empty() {
        p.push("no cameras: add [[camera]] sections to the config".to_owned());
    }
    for cam in &new.cameras {
        check_camera(cam, &mut p);
    }
    check_state_paths(&new, true, &mut p);
    if !p.is_empty() {
        return Err(Problems(p));
    }
    let mut restart = Vec::new();
    let mut differs = |what: &str, changed: bool| {
        if changed {
            restart.push(what.to_owned());
        }
    };
    differs("cameras", started.cameras != new.cameras);
    differs("models_dir", started.models_dir != new.models_dir);
    differs("gallery", started.gallery != new.gallery);
    differs("[detector]", started.detector != new.detector);
    differs("[restore]", started.restore != new.restore);
    differs(
        "[embed] small-face embedder",
        (started.embed.small_face_embedder, started.embed.small_face_below_px)
            != (new.embed.small_face_embedder, new.embed.small_face_below_px),
    );
    differs("[pipeline]", started.pipeline != new.pipeline);
    differs("[sinks]", started.sinks != new.sinks);
    differs("[images]", started.images != new.images);
    differs("[service]", started.service != new.service);
    differs("[http]", started.http != new.http);
    let notes = if restart.is_empty() {
        Vec::new()
    } else {
        vec![format!("{} changed: applied at the next restart (systemctl restart farsight)", restart.join(", "))]
    };
    Ok(Reloaded {
        threshold: new.matching.threshold,
        small_face_threshold: new.embed.small_face_threshold,
        top_k: new.matching.top_k,
        track: new.track,
        crops: new.crops,
        visitors: new.visitors,
        notes,
    })
}
