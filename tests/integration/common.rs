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

/// Enrolls "Tony Blair" from LFW photos 1 and 2 into `gallery` (photo 3 stays held back for probes)
/// and returns the command's output (it succeeded).
pub fn enroll_tony_blair(gallery: &Path) -> Output {
    let (a1, a2) = (lfw_image("Tony_Blair", 1), lfw_image("Tony_Blair", 2));
    let g = gallery.to_str().unwrap();
    let out = farsight(&[
        "enroll",
        "--gallery",
        g,
        "--name",
        "Tony Blair",
        "--largest",
        a1.to_str().unwrap(),
        a2.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `farsight run` in the background: its stdout events arrive on a channel, its stderr goes to
/// a log file (shown when an assertion fails).
pub struct Daemon {
    pub child: std::process::Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
    log: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the binary with `args` (RUST_LOG=info, log in `dir`).
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let log = dir.join(format!("farsight-{}.log", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_farsight"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("FARSIGHT_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = std::sync::mpsc::sync_channel(10_000);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(serde_json::from_str::<serde_json::Value>(&line).expect("stdout is JSON lines"));
            }
        });
        Self { child, events, log, reader: Some(reader) }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next event satisfying `want` within `within`, or a panic showing the log.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) if want(&e) => return e,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {what} within {within:?}; log:\n{}", self.log());
    }

    /// SIGTERM, then the exit status (within 30 s) and every event still on stdout.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        self.reader.take().unwrap().join().unwrap();
        (status, self.events.try_iter().collect())
    }
}

use std::time::{Duration, Instant};
