//! Makes a "far away" frame for the demo: a photo shrunk by SCALE (antialiased) and placed on a
//! plain 640x480 canvas, so that its face is a few pixels wide, the case farsight exists for.
//! Deterministic: the same input and arguments give the same PNG (the resampling is the `image`
//! crate's, pinned by Cargo.lock). `scripts/fetch-samples.sh` runs it to derive
//! `samples/small-obama2.png` from the fetched `samples/obama2.jpg`, so no third-party photo is
//! committed and nothing is downloaded at run time.
//!
//! ```sh
//! cargo run --release --example small_face -- IN.jpg OUT.png SCALE [X Y]
//! ```
//! X, Y: top-left corner of the shrunk photo on the canvas (default: centred).

use image::{imageops, imageops::FilterType, Rgb, RgbImage};
use std::process::ExitCode;

const CANVAS: (u32, u32) = (640, 480);
const BACKGROUND: Rgb<u8> = Rgb([118, 124, 120]);

fn run(args: &[String]) -> Result<(), String> {
    let [input, output, scale, rest @ ..] = args else {
        return Err("usage: small_face IN OUT SCALE [X Y]".to_owned());
    };
    let scale: f64 = scale.parse().map_err(|e| format!("SCALE {scale:?}: {e}"))?;
    if !(scale > 0.0 && scale <= 1.0) {
        return Err(format!("SCALE must be in (0, 1], got {scale}"));
    }
    let photo = image::open(input).map_err(|e| format!("{input}: {e}"))?.to_rgb8();
    let w = ((f64::from(photo.width()) * scale).round() as u32).clamp(1, CANVAS.0);
    let h = ((f64::from(photo.height()) * scale).round() as u32).clamp(1, CANVAS.1);
    let small = imageops::resize(&photo, w, h, FilterType::Triangle);
    let (x, y) = match rest {
        [] => (i64::from((CANVAS.0 - w) / 2), i64::from((CANVAS.1 - h) / 2)),
        [x, y] => (x.parse().map_err(|e| format!("X {x:?}: {e}"))?, y.parse().map_err(|e| format!("Y {y:?}: {e}"))?),
        _ => return Err("usage: small_face IN OUT SCALE [X Y]".to_owned()),
    };
    let mut canvas = RgbImage::from_pixel(CANVAS.0, CANVAS.1, BACKGROUND);
    imageops::overlay(&mut canvas, &small, x, y);
    canvas.save(output).map_err(|e| format!("{output}: {e}"))?;
    println!("{output}: {input} shrunk to {w}x{h} at ({x}, {y}) on a {}x{} canvas", CANVAS.0, CANVAS.1);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("small_face: {e}");
            ExitCode::FAILURE
        }
    }
}
