//! Remakes the fuzz seed corpus, `fuzz/corpus/<target>/` (see `fuzz/README.md`), from nothing
//! but this source tree: synthetic images drawn here, configs made from `farsight.example.toml`,
//! a small pairs file in LFW's format with made-up names, a real gallery enrolled through the
//! library (plus damaged copies of it), and track events written by the library's own types.
//! No dataset image is used. Every file is a few KB; the output is the same on every run.
//!
//! ```sh
//! cargo run --release --no-default-features --example fuzz_seeds
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farsight::event::{BestShot, Phase, TrackDecision, TrackEvent};
use farsight::gallery::{Candidate, NewTemplate};
use farsight::geometry::Rect;
use farsight::{Gallery, OpenMode};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    images(&root.join("image_detect"));
    configs(&root.join("config_toml"));
    pairs(&root.join("pairs_file"));
    galleries(&root.join("gallery_db"));
    events(&root.join("event_json"));
    println!("seed corpus written under {}", root.display());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A cartoon face: skin ellipse, eyes with pupils, brows, a nose shadow and a mouth, on a grey
/// wall. Enough structure for the detector's later layers to fire on some mutations.
fn face(w: u32, h: u32) -> RgbImage {
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let (rx, ry) = (w as f32 * 0.3, h as f32 * 0.4);
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
        let in_ellipse = |ex: f32, ey: f32, sx: f32, sy: f32| ((fx - ex) / sx).powi(2) + ((fy - ey) / sy).powi(2) < 1.0;
        if fx * fx + fy * fy >= 1.0 {
            return Rgb([110, 115, 120]);
        }
        for ex in [-0.4, 0.4] {
            if in_ellipse(ex, -0.2, 0.08, 0.08) {
                return Rgb([30, 20, 15]);
            }
            if in_ellipse(ex, -0.2, 0.2, 0.1) {
                return Rgb([235, 235, 230]);
            }
            if in_ellipse(ex, -0.42, 0.22, 0.04) {
                return Rgb([60, 40, 30]);
            }
        }
        if in_ellipse(0.0, 0.15, 0.1, 0.18) {
            return Rgb([180, 130, 105]);
        }
        if in_ellipse(0.0, 0.5, 0.3, 0.07) {
            return Rgb([150, 60, 60]);
        }
        Rgb([215, 170, 140])
    })
}

fn images(dir: &Path) {
    use image::DynamicImage as D;
    let face_jpg = encode(&D::ImageRgb8(face(96, 96)), ImageFormat::Jpeg);
    write(dir, "face-96x96.jpg", &face_jpg);
    write(dir, "face-64x80.png", &encode(&D::ImageRgb8(face(64, 80)), ImageFormat::Png));
    write(dir, "face-40x40.bmp", &encode(&D::ImageRgb8(face(40, 40)), ImageFormat::Bmp));
    // Cut inside the scan: refused as truncated (no end-of-image marker after the last scan).
    write(dir, "face-truncated.jpg", &face_jpg[..face_jpg.len() / 2]);
    let gradient = RgbImage::from_fn(32, 32, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 128]));
    write(dir, "gradient-32x32.png", &encode(&D::ImageRgb8(gradient), ImageFormat::Png));
    let gray = GrayImage::from_fn(40, 30, |x, y| Luma([((x + y) * 4) as u8]));
    write(dir, "gray-40x30.png", &encode(&D::ImageLuma8(gray.clone()), ImageFormat::Png));
    write(dir, "gray-40x30.jpg", &encode(&D::ImageLuma8(gray), ImageFormat::Jpeg));
    let rgba = RgbaImage::from_fn(24, 24, |x, y| Rgba([200, (x * 10) as u8, (y * 10) as u8, (x * y) as u8]));
    write(dir, "rgba-24x24.png", &encode(&D::ImageRgba8(rgba), ImageFormat::Png));
    let deep = image::ImageBuffer::from_fn(20, 20, |x, y| image::Rgb([(x * 3000) as u16, (y * 3000) as u16, 65535u16]));
    write(dir, "rgb16-20x20.png", &encode(&D::ImageRgb16(deep), ImageFormat::Png));
    let checker =
        RgbImage::from_fn(16, 16, |x, y| if (x / 4 + y / 4) % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([255; 3]) });
    write(dir, "checker-16x16.bmp", &encode(&D::ImageRgb8(checker), ImageFormat::Bmp));
    let wide = RgbImage::from_fn(256, 8, |x, _| Rgb([x as u8, 255 - x as u8, 60]));
    write(dir, "wide-256x8.jpg", &encode(&D::ImageRgb8(wide), ImageFormat::Jpeg));
    let one = encode(&D::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([9, 99, 199]))), ImageFormat::Png);
    write(dir, "one-pixel.png", &one);
    // The same PNG declaring 16000x16000 (its IHDR CRC fixed): refused from the header.
    write(dir, "bomb-16000x16000.png", &with_png_size(&one, 16000, 16000));
    write(dir, "not-an-image.txt", b"GIF89a? no: just text\n");
}

/// `png` with its IHDR width and height replaced (and the chunk's CRC recomputed).
fn with_png_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, CRC.
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn configs(dir: &Path) {
    let example = include_str!("../farsight.example.toml");
    write(dir, "example.toml", example.as_bytes());
    // Every commented-out section and key switched on (as the config's unit test does).
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_whitespace().nth(1) == Some("=") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    write(dir, "example-uncommented.toml", uncommented.as_bytes());
    write(dir, "minimal.toml", b"version = 1\n");
    write(dir, "default-written.toml", toml::to_string(&farsight::Config::default()).unwrap().as_bytes());
    write(
        dir,
        "cameras.toml",
        b"version = 1\n\n[[camera]]\nname = \"door\"\nurl = \"rtsp://user:secret@10.0.0.5/stream1\"\n\
          stall_timeout_s = 5.5\n\n[[camera]]\nname = \"desk\"\nurl = \"v4l2:///dev/video0\"\nwidth = 640\n\
          height = 480\nfps = 15\nformat = \"MJPG\"\n\n[[camera]]\nname = \"drop_folder\"\nurl = \"incoming/\"\n\
          frame_interval_ms = 200\n",
    );
    write(
        dir,
        "bad-values.toml",
        b"version = 2\n[detector]\nkind = \"retinaface\"\nscore_threshold = nan\nmax_side = 20\n[match]\n\
          top_k = 0\n[track]\niou_min = -inf\n[[camera]]\nname = \"a b\"\nurl = \"http://x\"\nfps = 0\n",
    );
    write(dir, "syntax-error.toml", b"version = 1\n[detector\nkind = centerface\n");
    write(dir, "not-utf8.toml", b"version = 1\n# caf\xe9\n");
    write(dir, "nul.toml", b"version = 1\n\0\n");
}

fn pairs(dir: &Path) {
    // LFW's layout (tab-separated, `folds pairs-per-class` header), names made up.
    let mut lfw = String::from("2\t3\n");
    for fold in 0..2 {
        for k in 0..3 {
            lfw += &format!("Person_{fold}{k}\t{}\t{}\n", k + 1, k + 2);
        }
        for k in 0..3 {
            lfw += &format!("Person_{fold}{k}\t{}\tOther_{fold}{k}\t{}\n", k + 1, k + 3);
        }
    }
    write(dir, "lfw-2-folds.txt", lfw.as_bytes());
    write(dir, "spaces-and-blank-lines.txt", b"1 1\n\nAda 1 2\n   \nAda 1 Bob 3\n");
    write(dir, "truncated.txt", b"3 2\nAda 1 2\nBob 1 2\nAda 1 Bob 1\n");
    write(dir, "bad-number.txt", b"1 1\nAda 1 x\nAda 1 Bob 1\n");
    write(dir, "header-only.txt", b"10 300\n");
    write(dir, "not-utf8.txt", b"1 1\nRen\xe9 1 2\nRen\xe9 1 Bob 1\n");
    write(dir, "folds-range.txt", b"6-10");
    write(dir, "folds-list.txt", b"3, 1,5-6,5");
}

fn galleries(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    // Named without `.db`: the repository ignores *.db files.
    let real = dir.join("gallery-real.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", real.display()));
    }
    let embedder = farsight::embed::EmbedderId { name: "sface-2021dec".into(), sha256: "ab".repeat(32) };
    {
        let mut g = Gallery::open(&real, OpenMode::CreateIfMissing, Some(&embedder)).unwrap();
        for (person, name) in ["Ada Lovelace", "Grace Hopper"].iter().enumerate() {
            let templates: Vec<NewTemplate> = (0..2)
                .map(|k| NewTemplate {
                    vector: (0..farsight::embed::EMBEDDING_DIM)
                        .map(|i| ((i * 7 + person * 31 + k * 3) % 17) as f32 / 17.0 - 0.5)
                        .collect(),
                    source: format!("seed-{person}-{k}.jpg"),
                    face_px: 24.0 + 8.0 * k as f32,
                })
                .collect();
            g.enroll(name, &embedder, &templates).unwrap();
        }
    }
    // Fixed timestamps, rollback journal and 512-byte pages: the same few KB on every run.
    sql(&real, "UPDATE identities SET created_at = 1700000000; UPDATE templates SET created_at = 1700000000;");
    sql(&real, "PRAGMA journal_mode = DELETE; PRAGMA page_size = 512; VACUUM;");
    let variants: [(&str, &str); 5] = [
        ("gallery-wal-header.sqlite3", "PRAGMA journal_mode = WAL;"),
        ("gallery-too-new.sqlite3", "UPDATE meta SET value = '99' WHERE key = 'schema_version';"),
        ("gallery-short-vector.sqlite3", "UPDATE templates SET vector = x'0000803f', dim = 1 WHERE id = 1;"),
        ("gallery-schema-1.sqlite3", "DROP TABLE events; UPDATE meta SET value = '1' WHERE key = 'schema_version';"),
        ("gallery-foreign.sqlite3", "DROP TABLE templates; DROP TABLE identities; DROP TABLE events; DROP TABLE meta; CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('not a gallery');"),
    ];
    for (name, change) in variants {
        let path = dir.join(name);
        std::fs::copy(&real, &path).unwrap();
        sql(&path, change);
        sql(&path, "VACUUM;");
    }
    let bytes = std::fs::read(&real).unwrap();
    write(dir, "gallery-cut-in-half.sqlite3", &bytes[..bytes.len() / 2]);
    let mut flipped = bytes.clone();
    for i in (100..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5A;
    }
    write(dir, "gallery-bytes-flipped.sqlite3", &flipped);
    write(dir, "empty-file", b"");
}

fn sql(path: &Path, batch: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(batch).unwrap();
}

fn events(dir: &Path) {
    let event = TrackEvent {
        event: TrackDecision::Match,
        phase: Phase::Final,
        update: false,
        camera: "door".into(),
        track: 17,
        identity: "Ada Lovelace".into(),
        score: Some(0.61),
        candidates: vec![
            Candidate { name: "Ada Lovelace".into(), score: 0.61 },
            Candidate { name: "Grace Hopper".into(), score: 0.12 },
        ],
        best_shot: BestShot {
            frame: 42,
            rect: Rect { x: 101.5, y: 64.25, w: 18.0, h: 22.5 },
            face_px: 18.0,
            aligned_px: 23.4,
            restored: true,
            restorer: Some("ftlgan".into()),
            embedder: None,
            detector_score: 0.87,
            quality: 0.42,
            crop: Some("farsight-crops/door-17.png".into()),
        },
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_004_500,
        first_seen_s: 12.04,
        last_seen_s: 16.54,
        frames_seen: 37,
        frames_used: 5,
        visitor: Some("v1".into()),
        visitor_visits: Some(2),
        visitor_cameras: Some(vec!["door".into()]),
    };
    write(dir, "match-final.json", serde_json::to_string(&event).unwrap().as_bytes());
    write(dir, "match-final-pretty.json", serde_json::to_string_pretty(&event).unwrap().as_bytes());
    let unknown = TrackEvent {
        event: TrackDecision::Unknown,
        phase: Phase::Decision,
        update: true,
        identity: farsight::event::UNKNOWN.into(),
        score: None,
        candidates: vec![],
        best_shot: BestShot { restorer: None, restored: false, crop: None, ..event.best_shot.clone() },
        ..event.clone()
    };
    write(dir, "unknown-decision-empty-gallery.json", serde_json::to_string(&unknown).unwrap().as_bytes());
    let update = TrackEvent { phase: Phase::Update, update: true, ..event.clone() };
    let mut value = serde_json::to_value(&update).unwrap();
    // A field from a newer farsight: readers ignore what they do not know.
    value["zone"] = serde_json::json!("entrance");
    write(dir, "update-with-newer-field.json", value.to_string().as_bytes());
    // Float edges: a long f64 literal (serde_json reads some 1 ULP off) and an f32 beyond its
    // range (reads as infinity, which JSON writes as null).
    let mut edges = serde_json::to_value(&event).unwrap();
    edges["first_seen_s"] = serde_json::json!(7.84866200421318e183);
    edges["last_seen_s"] = serde_json::json!(6.51592972722763e-87);
    write(dir, "float-edges.json", edges.to_string().as_bytes());
    let text = serde_json::to_string(&event)
        .unwrap()
        .replace("\"score\":0.61,\"candidates\"", "\"score\":1e39,\"candidates\"");
    write(dir, "score-beyond-f32.json", text.as_bytes());
    write(dir, "missing-fields.json", br#"{"event":"match","phase":"final","camera":"door"}"#);
    write(dir, "wrong-enum.json", br#"{"event":"Match","phase":"FINAL"}"#);
}
