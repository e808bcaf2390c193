//! Face pictures for HTTP clients, when `[crops]` is enabled: `GET /api/crops/{file}` serves the
//! best-shot crops the pipeline writes (`farsight-<camera>-<track>-<ms>.png`) and the identities'
//! thumbnails (`identity-<sha256 of the name>.png`, written when photos are enrolled through the
//! API), and nothing else: only names of those two shapes, only from a folder that holds farsight's
//! marker, never through a link. Events get a `best_shot.crop_url`, identities a `thumbnail` URL.

use super::error::ApiError;
use super::server::{blocking, Shared};
use crate::pipeline::{is_crop_name, prepare_crops_dir, private_file, CROPS_MARKER};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use image::RgbImage;
use std::io::Read;
use std::path::PathBuf;

/// Where crops are served from.
pub(super) const PREFIX: &str = "/api/crops/";

/// The largest file served (a 112x112 PNG is ~30 kB; anything far larger is not ours).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Side of an identity thumbnail, in pixels.
const THUMB_PX: u32 = 96;

/// The file name of `name`'s thumbnail: a hash, so any identity name makes a safe file name.
pub(super) fn thumbnail_name(name: &str) -> String {
    format!("identity-{}.png", crate::model::sha256_hex(name.as_bytes()))
}

fn is_thumbnail_name(file: &str) -> bool {
    file.strip_prefix("identity-")
        .and_then(|f| f.strip_suffix(".png"))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `file` may be served: a crop or thumbnail name, and nothing that reads as a path.
fn servable(file: &str) -> bool {
    !file.starts_with('.') && !file.contains(['/', '\\', '\0']) && (is_crop_name(file) || is_thumbnail_name(file))
}

/// `GET /api/crops/{file}`: a best-shot crop or an identity thumbnail (PNG). 404 when crops are
/// off, for any other name, and for a file that is not there (or is a link).
pub(super) async fn get(State(state): State<Shared>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let Some(dir) = state.cx.crops.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "crops are off: set [crops] enabled = true (and crops.dir) to keep and serve best-shot crops",
        ));
    };
    if !servable(&file) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no crop {}: crops are named farsight-<camera>-<track>-<ms>.png or identity-<sha256>.png",
                crate::gallery::shorten(&file)
            ),
        ));
    }
    let immutable = is_crop_name(&file);
    let bytes = blocking(move || read_ours(&dir, &file)).await?;
    // Crops never change once written; a thumbnail is rewritten when an identity is re-enrolled.
    let cache = if immutable { "private, max-age=86400, immutable" } else { "private, no-cache" };
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

/// Reads `dir/file` when `dir` is farsight's crops folder and the file a regular file (opened
/// without following a link), at most [`MAX_FILE_BYTES`].
fn read_ours(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, ApiError> {
    let gone = || ApiError::new(StatusCode::NOT_FOUND, format!("no crop {file} (deleted by retention, or never made)"));
    if !dir.join(CROPS_MARKER).is_file() {
        return Err(gone());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let f = opts.open(dir.join(file)).map_err(|_| gone())?;
    let meta = f.metadata().map_err(|_| gone())?;
    if !meta.is_file() {
        return Err(gone());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ApiError::internal(format!("crop {file} is larger than {MAX_FILE_BYTES} bytes: not served")));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::internal(format!("reading crop {file}: {e}")))?;
    Ok(bytes)
}

/// Adds `best_shot.crop_url` to an event whose best shot has a crop farsight made.
pub(super) fn add_crop_url(event: &mut serde_json::Value) {
    let Some(shot) = event.get_mut("best_shot").and_then(|s| s.as_object_mut()) else { return };
    let Some(file) = shot.get("crop").and_then(|c| c.as_str()).and_then(|c| std::path::Path::new(c).file_name()) else {
        return;
    };
    let Some(file) = file.to_str().filter(|f| servable(f)) else { return };
    let url = format!("{PREFIX}{file}");
    shot.insert("crop_url".to_owned(), url.into());
}

/// The thumbnail URL of `name` when crops are on and it has one.
pub(super) fn thumbnail_url(dir: Option<&std::path::Path>, name: &str) -> Option<String> {
    let file = thumbnail_name(name);
    dir?.join(&file).is_file().then(|| format!("{PREFIX}{file}"))
}

/// Keeps a square thumbnail of the face at `rect` in `photo` as `name`'s picture (replacing an
/// older one). Best effort: a failure is logged, never refuses the enroll it follows.
pub(super) fn save_thumbnail(dir: &std::path::Path, name: &str, photo: &RgbImage, rect: crate::geometry::Rect) {
    if let Err(e) = write_thumbnail(dir, name, photo, rect) {
        log::warn!("http: cannot keep a thumbnail of {} in {}: {e}", crate::gallery::shorten(name), dir.display());
    }
}

fn write_thumbnail(
    dir: &std::path::Path,
    name: &str,
    photo: &RgbImage,
    rect: crate::geometry::Rect,
) -> std::io::Result<()> {
    prepare_crops_dir(dir, &[], true).map_err(std::io::Error::other)?;
    // A square around the box, a little larger than it, inside the photo.
    let side = (rect.w.max(rect.h) * 1.2).max(1.0);
    let (cx, cy) = (rect.x + rect.w / 2.0, rect.y + rect.h / 2.0);
    let (pw, ph) = (photo.width() as f32, photo.height() as f32);
    let side = side.min(pw).min(ph);
    let x0 = (cx - side / 2.0).clamp(0.0, (pw - side).max(0.0));
    let y0 = (cy - side / 2.0).clamp(0.0, (ph - side).max(0.0));
    let (x0, y0, s) = (x0 as u32, y0 as u32, (side as u32).max(1));
    let face = image::imageops::crop_imm(photo, x0, y0, s, s).to_image();
    let thumb = image::imageops::resize(&face, THUMB_PX, THUMB_PX, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    thumb.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(std::io::Error::other)?;
    let path = dir.join(thumbnail_name(name));
    let tmp = dir.join(format!(".{}.tmp", thumbnail_name(name)));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::io::Write::write_all(&mut private_file(&tmp, true)?, &bytes)?;
    std::fs::rename(&tmp, &path)
}

/// Moves `from`'s thumbnail to `to` (after a rename); nothing when there is none.
pub(super) fn rename_thumbnail(dir: &std::path::Path, from: &str, to: &str) {
    let (a, b): (PathBuf, PathBuf) = (dir.join(thumbnail_name(from)), dir.join(thumbnail_name(to)));
    if a.is_file() {
        if let Err(e) = std::fs::rename(&a, &b) {
            log::warn!("http: cannot move the thumbnail of {}: {e}", crate::gallery::shorten(from));
        }
    }
}

/// Deletes `name`'s thumbnail (after the identity was removed); nothing when there is none.
pub(super) fn remove_thumbnail(dir: &std::path::Path, name: &str) {
    match std::fs::remove_file(dir.join(thumbnail_name(name))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            log::warn!("http: cannot delete the thumbnail of {}: {e}", crate::gallery::shorten(name));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crop_and_thumbnail_names_are_servable() {
        assert!(servable("farsight-door-3-1700000000000.png"));
        assert!(servable(&thumbnail_name("Tony Blair")));
        for bad in [
            "../g.db",
            "..",
            ".farsight-crops",
            "farsight-door-3-1700000000000.png/../../x",
            "farsight-a/b-3-17.png",
            "g.db",
            "identity-abc.png",
            "farsight-door-x-1.png",
            "/etc/passwd",
        ] {
            assert!(!servable(bad), "{bad}");
        }
    }

    #[test]
    fn events_get_a_crop_url_only_for_our_crops() {
        let mut e = serde_json::json!({"best_shot": {"crop": "/var/lib/farsight/crops/farsight-door-3-17.png"}});
        add_crop_url(&mut e);
        assert_eq!(e["best_shot"]["crop_url"], "/api/crops/farsight-door-3-17.png");
        let mut e = serde_json::json!({"best_shot": {"crop": "/etc/passwd"}});
        add_crop_url(&mut e);
        assert!(e["best_shot"].get("crop_url").is_none());
        let mut e = serde_json::json!({"best_shot": {"crop": null}});
        add_crop_url(&mut e);
        assert!(e["best_shot"].get("crop_url").is_none());
    }
}
