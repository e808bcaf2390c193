//! The FTLGAN training smoke test: `models/ftlgan/smoke.py` runs every training step (prepare with
//! this binary's export-aligned, two training steps, two distillation steps, ONNX export, int8
//! quantisation) on four training identities. It needs the training venv that
//! `models/ftlgan/setup.sh` creates (.ci/run does); a developer without PyTorch can skip it with
//! `FARSIGHT_SKIP_TRAINING_SMOKE=1`.

use std::path::Path;
use std::process::Command;

#[test]
fn ftlgan_training_steps_run_on_a_handful_of_faces() {
    if std::env::var_os("FARSIGHT_SKIP_TRAINING_SMOKE").is_some() {
        eprintln!("FTLGAN training smoke test SKIPPED (FARSIGHT_SKIP_TRAINING_SMOKE is set)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("models/ftlgan/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run models/ftlgan/setup.sh (PyTorch, ~3 GB) or set FARSIGHT_SKIP_TRAINING_SMOKE=1",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("models/ftlgan/smoke.py"))
        .env("FARSIGHT_BIN", env!("CARGO_BIN_EXE_farsight"))
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "smoke.py failed:\n{log}");
    assert!(log.contains("smoke: ok") && log.contains("training smoke test: ok"), "{log}");
}
