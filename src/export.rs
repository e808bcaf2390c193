//! `farsight export-aligned`: writes the aligned 112x112 faces of an LFW-layout dataset as PNG,
//! made by farsight's own detector and aligner, so a restoration model trained on them sees
//! exactly the crops the pipeline produces. Identities of excluded folds (the evaluation folds)
//! are never written: training must not see them.

use crate::align::{Alignment, ALIGNED_SIZE};
use crate::eval::{pick_centre_face, Pair};
use crate::recognize::Recognizer;
use crate::source::images;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read dataset folder {path}")]
    Dataset { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode {path}")]
    Encode { path: PathBuf, source: image::ImageError },
}

/// What an export did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub identities: usize,
    pub written: usize,
    /// Images without a detectable face (not written).
    pub no_face: usize,
    /// Images that could not be read (not written).
    pub unreadable: usize,
    /// Identities skipped because they belong to an excluded fold.
    pub excluded_identities: usize,
}

/// Exports every identity of `dataset` except those appearing in `excluded_folds` of `pairs`.
/// Writes `out/<Name>/<file stem>.png` and `out/manifest.csv` (identity, source, face px).
pub fn export_aligned(
    rec: &Recognizer,
    dataset: &Path,
    pairs: &[Pair],
    excluded_folds: &[usize],
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    let excluded: BTreeSet<&str> = pairs
        .iter()
        .filter(|p| excluded_folds.contains(&p.fold))
        .flat_map(|p| [p.first.name.as_str(), p.second.name.as_str()])
        .collect();
    let ds_err = |source| ExportError::Dataset { path: dataset.to_owned(), source };
    let mut names: Vec<String> = std::fs::read_dir(dataset)
        .map_err(ds_err)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    let w_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(w_err(out))?;
    let manifest_path = out.join("manifest.csv");
    let mut manifest = std::fs::File::create(&manifest_path).map_err(w_err(&manifest_path))?;
    writeln!(manifest, "identity,source,face_px").map_err(w_err(&manifest_path))?;
    let mut summary = ExportSummary::default();
    for name in &names {
        if excluded.contains(name.as_str()) {
            summary.excluded_identities += 1;
            continue;
        }
        let files = match images::list(&dataset.join(name)) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("skipping identity {name}: {}", crate::error_chain(&e));
                continue;
            }
        };
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(w_err(&dir))?;
        summary.identities += 1;
        for entry in files {
            let images::Entry::Image(file) = entry else { continue };
            let img = match images::load(&file, &Default::default()) {
                Ok(img) => img,
                Err(e) => {
                    log::warn!("{}", crate::error_chain(&e));
                    summary.unreadable += 1;
                    continue;
                }
            };
            let (w, h) = img.dimensions();
            let faces = match rec.detector().and_then(|d| d.detect(&img)) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("{}: {}", file.display(), crate::error_chain(&e));
                    summary.unreadable += 1;
                    continue;
                }
            };
            let aligned = pick_centre_face(&faces, w, h)
                .and_then(|f| Alignment::from_landmarks(&f.landmarks))
                .and_then(|a| a.warp(&img, ALIGNED_SIZE).map(|crop| (crop, a.native_size())));
            let Some((crop, native)) = aligned else {
                summary.no_face += 1;
                continue;
            };
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("face");
            let target = dir.join(format!("{stem}.png"));
            crop.save(&target).map_err(|source| ExportError::Encode { path: target.clone(), source })?;
            writeln!(manifest, "{name},{},{native:.1}", file.display()).map_err(w_err(&manifest_path))?;
            summary.written += 1;
        }
    }
    Ok(summary)
}
