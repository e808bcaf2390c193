//! farsight recognises people whose faces are too small for ordinary face recognition.
//!
//! The data path for still images (see README "Architecture"):
//! [`source::images`] → [`detect`] → [`align`] → [`restore`] (small faces only) → [`embed`] →
//! [`gallery`] snapshot search → [`event::FaceEvent`]. [`recognize::Recognizer`] wires the
//! stages together for every command; [`eval`] measures it on LFW-layout datasets.
//! Every fallible boundary returns its own `thiserror` enum; only the binary uses `anyhow`.

pub mod align;
pub mod bench;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod embed;
pub mod eval;
pub mod event;
pub mod export;
pub mod frame;
pub mod fuzzing;
pub mod gallery;
pub mod geometry;
pub mod heap;
pub mod http;
pub mod model;
pub mod motion;
pub mod pipeline;
pub mod recognize;
pub mod restore;
pub mod scene;
pub mod service;
pub mod sink;
pub mod source;
pub mod stats;
pub mod track;
pub mod visitors;

pub use config::Config;
pub use event::FaceEvent;
pub use gallery::{Gallery, OpenMode, Snapshot};
pub use recognize::{Observation, Recognizer};

/// An error and its causes on one line, `outer: cause: root cause`, for logs and problem lists
/// (the binary's edge does the same with anyhow's `{:#}`). Library errors never repeat their
/// source's text in their own message, so nothing is printed twice.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
