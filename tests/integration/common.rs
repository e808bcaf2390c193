//! Shared fixtures: the dataset location (fails loudly when absent), the models loaded once, and
//! a runner for the real `farsight` binary.

use farsight::{Config, Recognizer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `../shared/datasets`, or a panic that says what is missing.
pub fn datasets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    assert!(
        dir.join("lfw").is_dir() && dir.join("lfw-pairs.txt").is_file(),
        "LFW is missing: these tests read {}/lfw and lfw-pairs.txt (see shared/datasets/README.md); \
         they must not be skipped",
        dir.display()
    );
    dir
}

pub fn lfw_image(name: &str, number: u32) -> PathBuf {
    datasets().join("lfw").join(name).join(format!("{name}_{number:04}.jpg"))
}

/// The default models, loaded once per test binary.
pub fn recognizer() -> &'static Recognizer {
    static REC: OnceLock<Recognizer> = OnceLock::new();
    REC.get_or_init(|| Recognizer::load(&Config::default()).expect("the committed models load"))
}

/// Runs the real binary with `args`.
pub fn farsight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("FARSIGHT_CONFIG")
        .output()
        .expect("the farsight binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
