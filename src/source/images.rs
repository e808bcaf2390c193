//! Images as input: one file, or a folder read in name order as one camera's frames. Image files
//! are untrusted input (a camera's drop folder, an upload, a photo to enroll): the header is read
//! first and a picture over [`ImageLimits::max_pixels`] is refused before anything is decoded
//! (a 250 KB PNG can declare 16000x16000), decoders get an allocation cap, and a JPEG that ends
//! before its end-of-image marker (a half-copied file) is refused instead of decoded with a grey
//! lower half. Failures are typed ([`ImageError`]) and name the file, so callers can log, count
//! and skip a bad image without stopping, or refuse it outright (`enroll`).

use super::{FrameSource, Pulled, SourceError};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File extensions treated as images when listing a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

/// `[images]`: limits for decoding image files (photos to enroll or identify, image-folder
/// cameras, uploads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageLimits {
    /// The most pixels (width x height) an image may declare; larger ones are refused from their
    /// header, before decoding. Default: a 4096x2160 (DCI 4K) frame, ~35 MB decoded.
    pub max_pixels: u64,
}

/// 4096 x 2160: every 4K frame (UHD 3840x2160 and DCI 4096x2160) passes.
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 2160;

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_pixels: DEFAULT_MAX_PIXELS }
    }
}

impl ImageLimits {
    /// Every problem with the values (for `Config::validate`).
    pub fn validate(&self, p: &mut Vec<String>) {
        if !(64 * 64..=1 << 30).contains(&self.max_pixels) {
            p.push(format!("images.max_pixels = {} must be between 4096 and 1073741824", self.max_pixels));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error("{0} is a folder, not an image")]
    IsDirectory(PathBuf),
    #[error("{path} is not a regular file ({kind}): skipped")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{0} is empty (0 bytes)")]
    Empty(PathBuf),
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable image (corrupt, truncated or unsupported format)")]
    Decode { path: PathBuf, source: image::ImageError },
    #[error(
        "{path} declares {width}x{height} pixels, more than images.max_pixels = {max}: refused before decoding \
         (downscale the image, or raise images.max_pixels)"
    )]
    TooLarge { path: PathBuf, width: u32, height: u32, max: u64 },
    #[error("{path} is truncated (the JPEG stops before its end-of-image marker): copy the whole file again")]
    Truncated { path: PathBuf },
    #[error("{path} holds no image files ({exts})", exts = IMAGE_EXTENSIONS.join(", "))]
    NoImages { path: PathBuf },
}

/// What kind of file system entry `meta` describes, for messages (`lstat` metadata).
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else if meta.file_type().is_symlink() {
        "a broken symbolic link"
    } else {
        "not a regular file"
    }
}

fn stat_err(path: &Path, source: std::io::Error) -> ImageError {
    match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::Missing(path.to_owned()),
        _ => ImageError::Read { path: path.to_owned(), source },
    }
}

/// Reads and decodes one image file into 8-bit RGB, within `limits`. Symbolic links are
/// followed; anything but a regular file (a FIFO would block the reader forever) is refused.
pub fn load(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| stat_err(path, e))?;
    if meta.is_dir() {
        return Err(ImageError::IsDirectory(path.to_owned()));
    }
    if !meta.is_file() {
        return Err(ImageError::NotAFile { path: path.to_owned(), kind: kind_of(&meta) });
    }
    if meta.len() == 0 {
        return Err(ImageError::Empty(path.to_owned()));
    }
    let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_owned(), source })?;
    decode(&bytes, path, limits)
}

/// Decodes an image held in memory (`path` only names it in errors): the header's size is
/// checked against `limits` before decoding, and a JPEG must be complete.
pub fn decode(bytes: &[u8], path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty(path.to_owned()));
    }
    let reader = || {
        let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| ImageError::Read { path: path.to_owned(), source })?;
        let mut caps = image::Limits::default();
        // Room for the decoded RGBA picture and a decoder's working copy, never more.
        caps.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(16 << 20));
        r.limits(caps);
        Ok::<_, ImageError>(r)
    };
    let decode_err = |source| ImageError::Decode { path: path.to_owned(), source };
    let first = reader()?;
    let format = first.format();
    let (width, height) = first.into_dimensions().map_err(decode_err)?;
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge { path: path.to_owned(), width, height, max: limits.max_pixels });
    }
    if format == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(ImageError::Truncated { path: path.to_owned() });
    }
    Ok(reader()?.decode().map_err(decode_err)?.into_rgb8())
}

/// Whether a JPEG has its end-of-image marker (FF D9) after its last start-of-scan (FF DA). The
/// entropy-coded data of a scan never holds FF followed by D9 (a data FF is stuffed as FF 00), so
/// a file cut anywhere inside its last scan has no EOI after that scan's SOS. Decoders fill the
/// missing rows with grey and report success.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == marker);
    matches!((last(0xDA), last(0xD9)), (Some(sos), Some(eoi)) if eoi > sos)
}

/// One entry of an image folder, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file (or a link to one) with an image extension.
    Image(PathBuf),
    /// Something with an image extension that is not a regular file, or a sub-folder: reported
    /// and counted by the reader, never opened.
    Skipped { path: PathBuf, kind: &'static str },
}

/// The entries a source path stands for: the file itself, or a folder's image files (and the
/// entries skipped there) sorted by name, not recursive. Files without an image extension are
/// left out (a folder may hold notes or sidecar files).
pub fn list(path: &Path) -> Result<Vec<Entry>, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| stat_err(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![Entry::Image(path.to_owned())]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| ImageError::Read { path: path.to_owned(), source })?;
    let mut out = Vec::new();
    for entry in entries {
        let p = entry.map_err(|source| ImageError::Read { path: path.to_owned(), source })?.path();
        let is_image = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        // `metadata` follows links: a link to an image is read, a broken one is reported.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && is_image => out.push(Entry::Image(p)),
            Ok(m) if m.is_file() => {}
            Ok(m) => out.push(Entry::Skipped { kind: kind_of(&m), path: p }),
            Err(_) => {
                let kind = std::fs::symlink_metadata(&p).map_or("unreadable", |m| kind_of(&m));
                out.push(Entry::Skipped { path: p, kind });
            }
        }
    }
    if !out.iter().any(|e| matches!(e, Entry::Image(_))) {
        return Err(ImageError::NoImages { path: path.to_owned() });
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::Image(p) | Entry::Skipped { path: p, .. } => p,
        }
    }
}

/// An image file or a folder of images read as one camera's frames, in name order. Each
/// [`FrameSource::open`] lists the folder again and starts from the first image (a live-flagged
/// folder loops). Entries that are not regular files are pulled as errors (counted, logged).
#[derive(Debug)]
pub struct ImagesSource {
    path: PathBuf,
    interval: Duration,
    limits: ImageLimits,
    entries: Vec<Entry>,
    next: usize,
}

impl ImagesSource {
    /// `interval` is the stream time between two images.
    pub fn new(path: &Path, interval: Duration, limits: ImageLimits) -> Self {
        Self { path: path.to_owned(), interval, limits, entries: Vec::new(), next: 0 }
    }
}

impl FrameSource for ImagesSource {
    fn describe(&self) -> String {
        format!("images {}", self.path.display())
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.entries = list(&self.path)?;
        self.next = 0;
        Ok(())
    }

    fn pull(&mut self, _timeout: Duration) -> Result<Pulled, SourceError> {
        let Some(entry) = self.entries.get(self.next) else { return Ok(Pulled::End) };
        let index = self.next;
        // Move on first, so a bad image is skipped by the next pull.
        self.next += 1;
        match entry {
            Entry::Image(path) => {
                let image = load(path, &self.limits)?;
                Ok(Pulled::Frame { picture: super::Picture::Rgb(image), pts: Some(self.interval * index as u32) })
            }
            Entry::Skipped { path, kind } => Err(ImageError::NotAFile { path: path.clone(), kind }.into()),
        }
    }

    fn close(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits { max_pixels: DEFAULT_MAX_PIXELS };

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A PNG whose header declares `w` x `h` 8-bit RGB pixels, followed by a tiny (wrong) body: the
    /// shape of a decompression bomb, without building one.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend((data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend(data);
            out.extend(&body);
            out.extend(crc32(&body).to_be_bytes());
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        out
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        bytes
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let bomb = png_declaring(16_000, 16_000);
        assert!(bomb.len() < 100);
        let err = decode(&bomb, Path::new("bomb.png"), &LIMITS).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { width: 16_000, height: 16_000, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bomb.png") && msg.contains("16000x16000") && msg.contains("images.max_pixels"), "{msg}");
        // The limit is configurable: a small one refuses a small picture too.
        let small = ImageLimits { max_pixels: 64 * 64 };
        assert!(matches!(decode(&jpeg(65, 64), Path::new("a.jpg"), &small), Err(ImageError::TooLarge { .. })));
        assert!(decode(&jpeg(64, 64), Path::new("a.jpg"), &small).is_ok());
    }

    #[test]
    fn a_truncated_jpeg_is_refused_not_decoded_grey() {
        let whole = jpeg(96, 80);
        assert_eq!(decode(&whole, Path::new("whole.jpg"), &LIMITS).unwrap().dimensions(), (96, 80));
        for cut in [whole.len() / 2, whole.len() - 2, whole.len() - 1] {
            let err = decode(&whole[..cut], Path::new("half.jpg"), &LIMITS).unwrap_err();
            assert!(matches!(err, ImageError::Truncated { .. } | ImageError::Decode { .. }), "cut at {cut}: {err}");
        }
        // Bytes after the end-of-image marker (some cameras append metadata) are fine.
        let mut trailing = whole.clone();
        trailing.extend(b"trailer");
        assert!(decode(&trailing, Path::new("t.jpg"), &LIMITS).is_ok());
    }

    #[test]
    fn bad_files_get_typed_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(load(&empty, &LIMITS), Err(ImageError::Empty(_))));
        assert!(matches!(load(dir.path(), &LIMITS), Err(ImageError::IsDirectory(_))));
        assert!(matches!(load(&dir.path().join("nope.png"), &LIMITS), Err(ImageError::Missing(_))));
        let junk = dir.path().join("junk.jpg");
        std::fs::write(&junk, b"\xff\xd8\xff\xe0 definitely not a jpeg body").unwrap();
        let err = load(&junk, &LIMITS).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. } | ImageError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("junk.jpg"));
    }

    #[test]
    fn folders_list_images_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.JPG", "notes.txt", "c.jpeg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = list(dir.path())
            .unwrap()
            .iter()
            .map(|e| e.path().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "c.jpeg"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(list(empty.path()), Err(ImageError::NoImages { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn skipped_fifos_folders_and_broken_links_in_a_folder_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        RgbImage::new(8, 6).save(dir.path().join("a.png")).unwrap();
        let fifo = dir.path().join("b.jpg");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::fs::create_dir(dir.path().join("c.png")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("d.png")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.png"), dir.path().join("e.png")).unwrap();
        let kinds: Vec<Option<&str>> = list(dir.path())
            .unwrap()
            .iter()
            .map(|e| match e {
                Entry::Image(_) => None,
                Entry::Skipped { kind, .. } => Some(*kind),
            })
            .collect();
        assert_eq!(kinds, [None, Some("a FIFO"), Some("a folder"), Some("a broken symbolic link"), None]);
        // A FIFO is never opened (reading it would block forever), not even when named directly.
        assert!(matches!(load(&fifo, &LIMITS), Err(ImageError::NotAFile { kind: "a FIFO", .. })));
        let mut src = ImagesSource::new(dir.path(), Duration::from_millis(500), LIMITS);
        src.open().unwrap();
        let pulled: Vec<bool> = (0..5).map(|_| src.pull(Duration::ZERO).is_ok()).collect();
        assert_eq!(pulled, [true, false, false, false, true], "skipped entries come back as errors, in order");
        assert!(matches!(src.pull(Duration::ZERO).unwrap(), Pulled::End));
    }

    #[test]
    fn a_folder_source_skips_a_bad_image_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        RgbImage::new(8, 6).save(dir.path().join("a.png")).unwrap();
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        RgbImage::new(8, 6).save(dir.path().join("c.png")).unwrap();
        let mut src = ImagesSource::new(dir.path(), Duration::from_millis(500), LIMITS);
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
