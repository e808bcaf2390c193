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

/// What the tests give `farsight run`'s HTTP server (`FARSIGHT_HTTP_BIND`): loopback, any free
/// port, so runs in parallel never clash on the default 8080.
pub const HTTP_ANY_PORT: &str = "127.0.0.1:0";

/// Runs the real binary with `args`.
pub fn farsight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_farsight"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("FARSIGHT_CONFIG")
        .env("FARSIGHT_HTTP_BIND", HTTP_ANY_PORT)
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

/// A PNG whose header declares `w` x `h` 8-bit RGB pixels over a tiny body: a decompression bomb's
/// shape, without building one (what the hostile-input and HTTP upload tests feed farsight).
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
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
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let ihdr: Vec<u8> = w.to_be_bytes().into_iter().chain(h.to_be_bytes()).chain([8, 2, 0, 0, 0]).collect();
    chunk(b"IHDR", &ihdr);
    // A real zlib stream of zeros would be the bomb; a few bytes of it are enough for the header.
    chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00]);
    chunk(b"IEND", &[]);
    out
}

/// A TCP port on loopback that was free a moment ago, drawn at random from 20000-32767: below
/// Linux's ephemeral range (32768-60999), so outgoing connections of other tests cannot take it
/// between this check and the server's own bind (servers that lose the race anyway are retried by
/// their starters).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        let port = 20_000 + (h.finish() % 12_768) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-32767");
}

/// A `farsight run` in the background: its stdout events arrive on a channel, its stderr goes to
/// a log file (shown when an assertion fails). Dropped without [`Daemon::terminate`] (a failed
/// assertion), the process is killed and reaped: a failing test never leaves a daemon behind.
pub struct Daemon {
    pub child: std::process::Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Every event [`Daemon::wait_for`] has taken off stdout so far, matching or not.
    seen: std::cell::RefCell<Vec<serde_json::Value>>,
    log: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the binary with `args` (RUST_LOG=info, log in `dir`).
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(dir, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables (`NOTIFY_SOCKET`, ...).
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let log = dir.join(format!("farsight-{}.log", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_farsight"))
            .args(args)
            .env("FARSIGHT_HTTP_BIND", HTTP_ANY_PORT)
            .envs(env.iter().copied())
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
        Self { child, events, seen: Default::default(), log, reader: Some(reader) }
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
                Ok(e) => {
                    self.seen.borrow_mut().push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {what} within {within:?}; log:\n{}", self.log());
    }

    /// Every event taken off stdout by [`Daemon::wait_for`] so far.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.borrow().clone()
    }

    /// Sends `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }

    /// The exit status within `within`, then every event still on stdout.
    pub fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit within {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.reader.take().unwrap().join().unwrap();
        (status, self.events.try_iter().collect())
    }

    /// SIGTERM, then the exit status (within 30 s) and every event still on stdout.
    pub fn terminate(self) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("farsight log:\n{}", self.log());
        }
    }
}

use std::time::{Duration, Instant};
