//! A small W3C WebDriver client for the page test: Debian's `chromedriver` driving headless
//! `chromium`, spoken to with the HTTP client farsight already has (ureq) rather than a WebDriver
//! crate (fantoccini, thirtyfour), which would bring hyper's client stack and a second async
//! runtime into the test build for the dozen commands used here. A missing browser is a loud
//! failure that says how to install it (`scripts/install-deps.sh`, which `scripts/test.sh` runs).

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium session; dropped, it closes the browser and stops the driver.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn find_program(names: &[&str]) -> String {
    for name in names {
        let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
        if let Some(out) = found.ok().filter(|o| o.status.success()) {
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
    }
    panic!(
        "{} is not installed: the page test drives a real headless browser. Install Debian's chromium \
         and chromium-driver (scripts/install-deps.sh does; scripts/test.sh runs it)",
        names.join(" / ")
    );
}

impl Browser {
    /// Starts chromedriver and a headless chromium with a window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Self {
        let driver_bin = find_program(&["chromedriver"]);
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let port = crate::common::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Self { driver, base: format!("http://127.0.0.1:{port}"), session: String::new(), agent };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.agent.get(format!("{}/status", browser.base)).call().map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "chromedriver did not answer within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--force-device-scale-factor=1",
                         format!("--window-size={width},{height}")],
            },
        }}});
        let created = browser.send("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut response = response.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = response.status().as_u16();
        let body: Value =
            response.body_mut().with_config().limit(64 << 20).read_json().expect("webdriver answers JSON");
        let value = body.get("value").cloned().unwrap_or(body.clone());
        if status >= 400 {
            panic!("webdriver {method} {path}: {status} {}", value.get("message").unwrap_or(&value));
        }
        value
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The elements matching a CSS selector now.
    pub fn all(&self, css: &str) -> Vec<Element> {
        let found = self.cmd("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        found.as_array().unwrap().iter().map(|e| Element(e[ELEMENT].as_str().unwrap().to_owned())).collect()
    }

    /// The first element matching `css`, waiting up to `within` for it.
    pub fn find(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.all(css).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} within {within:?}; page text:\n{}",
                self.text_of_page()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `script` returns something truthy (not false, null, 0 or ""), and returns it.
    pub fn wait(&self, what: &str, within: Duration, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script, args.clone());
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v.as_f64() != Some(0.0) && v.as_str() != Some("");
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}; page text:\n{}", self.text_of_page());
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn text_of_page(&self) -> String {
        self.eval("return document.body ? document.body.innerText : '';", json!([])).as_str().unwrap_or("").to_owned()
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), None);
    }

    /// Types `text` into an input (for a file input: the file's path; several, one per line).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text })));
    }

    pub fn clear(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), None);
    }

    /// The viewport as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("a base64 screenshot"))
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver screenshots are), padding and whitespace ignored.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:#x}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
