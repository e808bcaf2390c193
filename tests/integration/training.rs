//! The FTLGAN training smoke test: `models/ftlgan/smoke.py` runs every training step (prepare with
//! this binary's export-aligned, two training steps, two distillation steps, ONNX export, int8
//! quantisation) on four training identities. It needs the training venv that
//! `models/ftlgan/setup.sh` creates (`scripts/test.sh` and .ci/run do); a developer without
//! PyTorch can build the tests with `FARSIGHT_SKIP_TRAINING_SMOKE=1`, which makes it an ignored
//! test (shown as such in the summary, with the reason) rather than a silent pass.

use std::path::Path;
use std::process::Command;

#[test]
#[cfg_attr(skip_training_smoke, ignore = "FARSIGHT_SKIP_TRAINING_SMOKE=1 at build time: needs models/ftlgan/.venv")]
fn ftlgan_training_steps_run_on_a_handful_of_faces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("models/ftlgan/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run models/ftlgan/setup.sh (PyTorch, ~3 GB), or build the tests with \
         FARSIGHT_SKIP_TRAINING_SMOKE=1 to mark this test ignored",
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
