//! One function per subcommand. This is the binary's edge: library errors become `anyhow` errors
//! with context here, and nowhere else.

use crate::cli::{Cli, Command, GalleryAction};
use anyhow::{bail, Context, Result};
use farsight::detect::{Detector, DetectorConfig, DetectorKind};
use farsight::embed::EmbedderKind;
use farsight::eval::{self, EvalOptions};
use farsight::gallery::NewTemplate;
use farsight::recognize::{to_event, Recognizer};
use farsight::source::images;
use farsight::{Config, Gallery, OpenMode};
use std::path::{Path, PathBuf};

pub fn run(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let Some(command) = cli.command else {
        // `--version` (clap answers a bare `farsight` with the help).
        print!("{}", version_text(&config));
        return Ok(());
    };
    match command {
        Command::Run { source, gallery, live, summary, detections, http_bind } => {
            let overrides = crate::live::Overrides { sources: source, gallery, live, http_bind };
            crate::live::run(config, cli.config.as_deref(), overrides, summary.as_deref(), detections.as_deref())
        }
        Command::Serve { gallery, bind } => crate::live::serve(config, gallery, bind),
        Command::Status { file } => crate::live::status(&config, file),
        Command::Enroll { gallery, name, largest, create_dir, images } => {
            let opts = EnrollOptions { largest, create_dir, quiet: cli.quiet };
            enroll(&config, gallery, &name, &opts, &images)
        }
        Command::Gallery { gallery, action } => gallery_admin(&config, gallery, action, cli.quiet),
        Command::Identify { gallery, images } => identify(&config, gallery, &images),
        Command::Eval {
            dataset,
            pairs,
            folds,
            sizes,
            restorers,
            embedders,
            modes,
            json,
            roc,
            threads,
            max_pairs_per_fold,
        } => {
            let folds = folds.as_deref().map(eval::parse_folds).transpose()?.unwrap_or_default();
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = EvalOptions {
                dataset,
                pairs,
                folds,
                sizes,
                restorers,
                embedders,
                modes,
                max_pairs_per_fold,
                threads,
                progress: !cli.quiet,
            };
            evaluate(&config, &opts, json.as_deref(), roc.as_deref())
        }
        Command::EvalFusion {
            dataset,
            pairs,
            folds,
            size,
            modes,
            frames,
            quality_powers,
            seed,
            photos,
            json,
            threads,
            max_pairs_per_fold,
        } => {
            let opts = eval::fusion::FusionOptions {
                dataset,
                pairs,
                folds: eval::parse_folds(&folds)?,
                size,
                modes,
                frames,
                best_shots: config.track.best_shots,
                powers: quality_powers,
                seed,
                photos,
                max_pairs_per_fold,
                threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                progress: !cli.quiet,
            };
            evaluate_fusion(&config, &opts, json.as_deref())
        }
        Command::EvalVisitors { dataset, pairs, calibrate_folds, folds, sizes, far, json, threads } => {
            let opts = farsight::visitors::eval::VisitorEvalOptions {
                dataset,
                pairs,
                calibrate_folds: eval::parse_folds(&calibrate_folds)?,
                folds: eval::parse_folds(&folds)?,
                sizes,
                fars: far,
                threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            evaluate_visitors(&config, &opts, json.as_deref())
        }
        Command::Bench { iterations, models: Some(manifest), json, profile, .. } => {
            bench_models(&manifest, iterations, json.as_deref(), profile)
        }
        Command::Bench { iterations, detectors, dataset, pairs, folds, sizes, faces, seed, json, .. }
            if !detectors.is_empty() =>
        {
            let study = farsight::bench::regions::RegionStudy {
                dataset,
                pairs,
                folds: eval::parse_folds(&folds)?,
                sizes,
                faces,
                detectors,
                iterations,
                seed,
            };
            bench_regions(&config, &study, json.as_deref())
        }
        Command::Bench { json: Some(_), .. } => {
            anyhow::bail!("--json needs --models or --detectors (the stage benchmark prints only)")
        }
        Command::Bench { image, iterations, .. } => bench(&config, image, iterations),
        Command::ExportAligned { dataset, pairs, exclude_folds, out } => {
            let rec = load_recognizer(&config)?;
            let excluded = eval::parse_folds(&exclude_folds)?;
            let pairs = eval::read_pairs(&pairs)?;
            let s = farsight::export::export_aligned(&rec, &dataset, &pairs, &excluded, &out)?;
            eprintln!(
                "{} faces of {} identities written to {} ({} identities of folds {exclude_folds} excluded, {} images \
                 without a face, {} unreadable)",
                s.written,
                s.identities,
                out.display(),
                s.excluded_identities,
                s.no_face,
                s.unreadable
            );
            Ok(())
        }
        Command::Validate => validate(config, cli.config.as_deref()),
    }
}

/// `farsight --version`: what is running, from which commit, with which models (the gallery's
/// templates are tied to the embedder's sha256).
fn version_text(config: &Config) -> String {
    let mut out = format!(
        "farsight {} (commit {})\nmodels in {}:\n",
        env!("CARGO_PKG_VERSION"),
        env!("FARSIGHT_GIT_COMMIT"),
        config.models_dir.display()
    );
    for file in farsight::model::KNOWN_FILES {
        let path = config.models_dir.join(file);
        let sha = match std::fs::read(&path) {
            Ok(bytes) => farsight::model::sha256_hex(&bytes),
            Err(_) => "missing".to_owned(),
        };
        out.push_str(&format!("  {file:<26} {sha}\n"));
    }
    out
}

fn load_recognizer(config: &Config) -> Result<Recognizer> {
    Recognizer::load(config).context("loading the models")
}

/// [`load_recognizer`] for commands on photos: the small-face embedder loads on demand.
fn load_recognizer_for_photos(config: &Config) -> Result<Recognizer> {
    Recognizer::load_for_photos(config).context("loading the models")
}

fn gallery_path(config: &Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| config.gallery.clone())
}

/// How `enroll` treats its images and the gallery path.
struct EnrollOptions {
    /// Use the largest of several faces instead of refusing the image.
    largest: bool,
    /// Create the gallery's folder when it is missing (otherwise a typo is refused).
    create_dir: bool,
    /// No progress lines on stderr.
    quiet: bool,
}

fn enroll(
    config: &Config,
    gallery: Option<PathBuf>,
    name: &str,
    opts: &EnrollOptions,
    paths: &[PathBuf],
) -> Result<()> {
    // Everything that can be refused without the models is refused first, and nothing is written
    // on any refusal.
    farsight::gallery::check_name(name)?;
    let path = gallery_path(config, gallery);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        if !opts.create_dir {
            return Err(farsight::gallery::GalleryError::NoFolder { path: path.clone(), dir: dir.to_owned() }.into());
        }
    }
    let rec = load_recognizer_for_photos(config)?;
    let id = rec.embedder().id().clone();
    if path.exists() {
        // Fail on a foreign or corrupt gallery before spending time on the images.
        Gallery::open(&path, OpenMode::MustExist, Some(&id))?;
    }
    let mut templates = Vec::new();
    let mut rejected = Vec::new();
    for p in paths {
        let img = match images::load(p, &config.images) {
            Ok(img) => img,
            Err(e) => {
                rejected.push(e.to_string());
                continue;
            }
        };
        match rec.single_face_template(&img, opts.largest)? {
            Ok(obs) => {
                let r = obs.face.rect;
                if !opts.quiet {
                    eprintln!(
                        "{}: using the face at x={:.0} y={:.0} w={:.0} h={:.0} (detector score {:.2})",
                        p.display(),
                        r.x,
                        r.y,
                        r.w,
                        r.h,
                        obs.face.score
                    );
                }
                templates.push(NewTemplate {
                    vector: obs.embedding,
                    source: format!("{} [{:.0},{:.0},{:.0},{:.0}]", path_text(p), r.x, r.y, r.w, r.h),
                    face_px: obs.aligned_px,
                });
            }
            Err(0) => rejected.push(format!("{}: no face found", p.display())),
            Err(n) => rejected.push(format!("{}: {n} faces found; pass --largest to use the largest", p.display())),
        }
    }
    if !rejected.is_empty() {
        bail!("nothing enrolled; fix or leave out these images:\n  {}", rejected.join("\n  "));
    }
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the gallery folder {}", dir.display()))?;
    }
    let mut g = Gallery::open(&path, OpenMode::CreateIfMissing, Some(&id))?;
    let new = g.enroll(name, &id, &templates)?;
    if !opts.quiet {
        eprintln!(
            "{} {}: {} template(s) added to {}",
            if new { "enrolled" } else { "updated" },
            farsight::gallery::shorten(name),
            templates.len(),
            path.display()
        );
    }
    Ok(())
}

/// A path as text, losslessly: valid UTF-8 as it is, any other byte as `\xNN` (a template's
/// `source` must say which file it came from, not a replacement character).
fn path_text(p: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in p.as_os_str().as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02X}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        p.display().to_string()
    }
}

fn gallery_admin(config: &Config, gallery: Option<PathBuf>, action: GalleryAction, quiet: bool) -> Result<()> {
    let path = gallery_path(config, gallery);
    let mut g = Gallery::open(&path, OpenMode::MustExist, None)?;
    match action {
        GalleryAction::List { json } => {
            let list = g.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<40} {:>9}  embedder", "identity", "templates");
                for i in &list {
                    println!("{:<40} {:>9}  {}", i.name, i.templates, i.embedders.join(","));
                }
                if !quiet {
                    eprintln!("{} identities in {}", list.len(), path.display());
                }
            }
        }
        GalleryAction::Remove { name } => {
            g.remove(&name)?;
            if !quiet {
                eprintln!("removed {}", farsight::gallery::shorten(&name));
            }
        }
        GalleryAction::Rename { from, to } => {
            farsight::gallery::check_name(&to)?;
            g.rename(&from, &to)?;
            if !quiet {
                eprintln!("renamed {} to {}", farsight::gallery::shorten(&from), farsight::gallery::shorten(&to));
            }
        }
    }
    Ok(())
}

fn identify(config: &Config, gallery: Option<PathBuf>, paths: &[PathBuf]) -> Result<()> {
    let rec = load_recognizer_for_photos(config)?;
    let path = gallery_path(config, gallery);
    let g = Gallery::open(&path, OpenMode::MustExist, Some(rec.embedder().id()))?;
    let snapshot = g.snapshot()?;
    let m = &config.matching;
    let mut failures = 0;
    for p in paths {
        let observations =
            match images::load(p, &config.images).map_err(anyhow::Error::from).and_then(|img| Ok(rec.observe(&img)?)) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("{}: {e:#}", p.display());
                    failures += 1;
                    continue;
                }
            };
        if observations.is_empty() {
            println!("{}: no face found", p.display());
        }
        for (i, obs) in observations.iter().enumerate() {
            let threshold = farsight::recognize::threshold_for(config, obs.embedder);
            let e = to_event(obs, &snapshot, threshold, m.top_k, &p.display().to_string(), 0);
            let cands: Vec<String> = e.candidates.iter().map(|c| format!("{} {:.3}", c.name, c.score)).collect();
            println!(
                "{}: face {} ({:.0} px{}{}): {} | candidates: {}",
                p.display(),
                i + 1,
                e.face_px,
                if e.restored { ", restored" } else { "" },
                if obs.embedder == EmbedderKind::Sface {
                    String::new()
                } else {
                    format!(", small-face embedder {}", obs.embedder)
                },
                e.identity,
                if cands.is_empty() { "none (empty gallery)".to_owned() } else { cands.join(", ") }
            );
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be read", paths.len());
    }
    Ok(())
}

fn evaluate(config: &Config, opts: &EvalOptions, json: Option<&Path>, roc: Option<&Path>) -> Result<()> {
    let rec = load_recognizer(config)?;
    let started = std::time::Instant::now();
    let report = eval::run(&rec, opts)?;
    print!("{}", eval::format_table(&report));
    eprintln!("evaluated in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(p) = json {
        eval::write_json(&report, p)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = roc {
        eval::write_roc(&report, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn evaluate_fusion(config: &Config, opts: &eval::fusion::FusionOptions, json: Option<&Path>) -> Result<()> {
    let rec = load_recognizer(config)?;
    let started = std::time::Instant::now();
    let report = eval::fusion::run(&rec, opts)?;
    print!("{}", eval::fusion::format_table(&report));
    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(p) = json {
        eval::fusion::write_json(&report, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn evaluate_visitors(
    config: &Config,
    opts: &farsight::visitors::eval::VisitorEvalOptions,
    json: Option<&Path>,
) -> Result<()> {
    let rec = load_recognizer(config)?;
    let started = std::time::Instant::now();
    let report = farsight::visitors::eval::run(&rec, opts)?;
    print!("{}", farsight::visitors::eval::format_tables(&report));
    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn bench(config: &Config, image: Option<PathBuf>, iterations: usize) -> Result<()> {
    let image = image.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/obama.jpg")));
    let photo = images::load(&image, &config.images)
        .with_context(|| "benchmark image (fetch the samples with scripts/fetch-samples.sh)")?;
    let rec = load_recognizer(config)?;
    // Time the detectors the config does not select too, so every choice has figures; one whose
    // file is missing or unusable is listed as skipped, as a missing restorer is.
    let (mut others, mut skipped_detectors) = (Vec::new(), Vec::new());
    for kind in [DetectorKind::Centerface, DetectorKind::Retinaface, DetectorKind::Yunet] {
        if kind == config.detector.kind {
            continue;
        }
        match Detector::load(&config.models_dir, DetectorConfig { kind, ..config.detector.clone() }) {
            Ok(d) => others.push(d),
            Err(e) => skipped_detectors.push((format!("detect {kind:?}"), e.to_string())),
        }
    }
    let others: Vec<&Detector> = others.iter().collect();
    let report = farsight::bench::run(&rec, &others, &photo, iterations)?;
    println!("{:<36} {:>10} {:>10} {:>12}", "stage", "median ms", "p90 ms", "x reference");
    for s in &report.stages {
        println!("{:<36} {:>10.2} {:>10.2} {:>12.2}", s.stage, s.median_ms, s.p90_ms, s.ratio_to_reference);
    }
    let skipped =
        report.skipped.iter().map(|s| (&s.stage, &s.reason)).chain(skipped_detectors.iter().map(|(s, r)| (s, r)));
    for (stage, reason) in skipped {
        println!("{stage:<36} {:>10} {:>10} {:>12}  ({reason})", "skipped", "-", "-");
    }
    println!(
        "reference workload (192^3 f32 matmul) median {:.2} ms; end to end {:.2} images/s; {} iterations",
        report.reference_median_ms, report.end_to_end_images_per_s, report.iterations
    );
    Ok(())
}

/// `farsight bench --models`: times each model file of the manifest on its input tensor.
fn bench_models(manifest: &Path, iterations: usize, json: Option<&Path>, profile: bool) -> Result<()> {
    let text = std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let cases: Vec<farsight::bench::ModelCase> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a model bench manifest", manifest.display()))?;
    let rows = farsight::bench::models(&cases, iterations, profile)?;
    print!("{}", farsight::bench::format_models(&rows));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_regions(config: &Config, study: &farsight::bench::regions::RegionStudy, json: Option<&Path>) -> Result<()> {
    let started = std::time::Instant::now();
    let report = farsight::bench::regions::run(study, &config.models_dir, &config.detector)?;
    print!("{}", farsight::bench::regions::format(&report));
    eprintln!("studied in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the daemon's start-up check (the same as `run`'s) and says what it found.
fn validate(mut config: Config, path: Option<&Path>) -> Result<()> {
    crate::live::demo_cameras(&mut config, path.is_some())?;
    let prepared = farsight::daemon::prepare(config, false)?;
    let config = &prepared.config;
    match prepared.identities {
        Some(n) => eprintln!("gallery {}: {n} identities", config.gallery.display()),
        None => eprintln!("gallery {} does not exist yet (created by the first enroll)", config.gallery.display()),
    }
    let names: Vec<&str> = config.cameras.iter().map(|c| c.name.as_str()).collect();
    eprintln!(
        "{}: OK (settings valid, models load, {} camera(s): {}, state paths writable)",
        path.map_or("built-in default config".into(), |p| p.display().to_string()),
        names.len(),
        names.join(", ")
    );
    Ok(())
}
