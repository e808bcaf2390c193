//! farsight's integration tests: real models, real LFW images from `../shared/datasets`, the real
//! binary. Nothing is hand-faked; a missing dataset fails loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod common;
mod eval_cli;
mod eval_fusion;
mod export;
mod faults;
mod fuzz_corpus;
mod golden;
mod hostile;
mod http;
mod live;
mod page;
mod recognition;
mod service;
mod sinks;
mod streaming;
mod training;
mod video;
mod visitors;
mod webdriver;
