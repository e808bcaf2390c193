//! Build-time facts: the git commit `farsight --version` prints, and whether the FTLGAN training
//! smoke test is skipped (`FARSIGHT_SKIP_TRAINING_SMOKE=1` at build time turns it into an ignored
//! test, visible as such in the test summary).

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_training_smoke)");
    println!("cargo:rerun-if-env-changed=FARSIGHT_SKIP_TRAINING_SMOKE");
    match std::env::var("FARSIGHT_SKIP_TRAINING_SMOKE").as_deref() {
        Ok("1") => println!("cargo:rustc-cfg=skip_training_smoke"),
        Ok("0") | Ok("") | Err(_) => {}
        Ok(other) => println!(
            "cargo:warning=FARSIGHT_SKIP_TRAINING_SMOKE={other:?} is neither 1 (skip) nor 0: the training smoke test runs"
        ),
    }
    // The commit for --version; a build outside a git checkout says "unknown". Rebuilt when HEAD
    // moves (the file HEAD points to changes on every commit).
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{reference}");
        }
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    println!("cargo:rustc-env=FARSIGHT_GIT_COMMIT={commit}");
}
