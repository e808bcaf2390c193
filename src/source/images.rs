//! Images as input: one file, or a folder read in name order as one camera's frames. Decoding
//! failures are typed ([`ImageError`]) and name the file, so callers can log, count and skip a bad
//! image without stopping, or refuse it outright (`enroll`).

use super::{FrameSource, Pulled, SourceError};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File extensions treated as images when listing a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error("{0} is a folder, not an image")]
    IsDirectory(PathBuf),
    #[error("{0} is empty (0 bytes)")]
    Empty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable image (corrupt, truncated or unsupported format): {source}")]
    Decode { path: PathBuf, source: image::ImageError },
    #[error("{path} holds no image files ({exts})", exts = IMAGE_EXTENSIONS.join(", "))]
    NoImages { path: PathBuf },
}

/// Reads and decodes one image file into 8-bit RGB.
pub fn load(path: &Path) -> Result<RgbImage, ImageError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::Missing(path.to_owned()),
        _ => ImageError::Read { path: path.to_owned(), source },
    })?;
    if meta.is_dir() {
        return Err(ImageError::IsDirectory(path.to_owned()));
    }
    if meta.len() == 0 {
        return Err(ImageError::Empty(path.to_owned()));
    }
    let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_owned(), source })?;
    let decoded = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Read { path: path.to_owned(), source })?
        .decode()
        .map_err(|source| ImageError::Decode { path: path.to_owned(), source })?;
    Ok(decoded.into_rgb8())
}

/// The images a source path stands for: the file itself, or a folder's image files sorted by name
/// (not recursive).
pub fn list(path: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::Missing(path.to_owned()),
        _ => ImageError::Read { path: path.to_owned(), source },
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| ImageError::Read { path: path.to_owned(), source })?;
    let mut files = Vec::new();
    for entry in entries {
        let p = entry.map_err(|source| ImageError::Read { path: path.to_owned(), source })?.path();
        let is_image = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(ImageError::NoImages { path: path.to_owned() });
    }
    files.sort();
    Ok(files)
}

/// An image file or a folder of images read as one camera's frames, in name order. Each
/// [`FrameSource::open`] starts again from the first image (a live-flagged folder loops).
#[derive(Debug)]
pub struct ImagesSource {
    path: PathBuf,
    interval: Duration,
    files: Vec<PathBuf>,
    next: usize,
}

impl ImagesSource {
    /// `interval` is the stream time between two images.
    pub fn new(path: &Path, interval: Duration) -> Self {
        Self { path: path.to_owned(), interval, files: Vec::new(), next: 0 }
    }
}

impl FrameSource for ImagesSource {
    fn describe(&self) -> String {
        format!("images {}", self.path.display())
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.files = list(&self.path)?;
        self.next = 0;
        Ok(())
    }

    fn pull(&mut self, _timeout: Duration) -> Result<Pulled, SourceError> {
        let Some(path) = self.files.get(self.next) else { return Ok(Pulled::End) };
        let index = self.next;
        // Move on first, so a bad image is skipped by the next pull.
        self.next += 1;
        let image = load(path)?;
        Ok(Pulled::Frame { image, pts: Some(self.interval * index as u32) })
    }

    fn close(&mut self) {
        self.files.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_get_typed_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(load(&empty), Err(ImageError::Empty(_))));
        assert!(matches!(load(dir.path()), Err(ImageError::IsDirectory(_))));
        assert!(matches!(load(&dir.path().join("nope.png")), Err(ImageError::Missing(_))));
        let junk = dir.path().join("junk.jpg");
        std::fs::write(&junk, b"\xff\xd8\xff\xe0 definitely not a jpeg body").unwrap();
        let err = load(&junk).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("junk.jpg"));
    }

    #[test]
    fn folders_list_images_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.JPG", "notes.txt", "c.jpeg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> =
            list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.JPG", "b.png", "c.jpeg"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(list(empty.path()), Err(ImageError::NoImages { .. })));
    }

    #[test]
    fn a_folder_source_skips_a_bad_image_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        RgbImage::new(8, 6).save(dir.path().join("a.png")).unwrap();
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        RgbImage::new(8, 6).save(dir.path().join("c.png")).unwrap();
        let mut src = ImagesSource::new(dir.path(), Duration::from_millis(500));
        src.open().unwrap();
        let t = Duration::ZERO;
        assert!(matches!(src.pull(t).unwrap(), Pulled::Frame { pts: Some(p), .. } if p.is_zero()));
        assert!(matches!(src.pull(t), Err(SourceError::Image(ImageError::Decode { .. }))));
        let third = src.pull(t).unwrap();
        assert!(matches!(third, Pulled::Frame { pts: Some(p), .. } if p == Duration::from_secs(1)), "{third:?}");
        assert!(matches!(src.pull(t).unwrap(), Pulled::End));
        // Reopening starts again (a live-flagged folder loops).
        src.open().unwrap();
        assert!(matches!(src.pull(t).unwrap(), Pulled::Frame { .. }));
    }
}
