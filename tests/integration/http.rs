//! The HTTP server against the real binary (`farsight serve`, `farsight run` on an image-folder
//! camera), a real HTTP client (ureq), the real models and LFW photos: enroll through the API and
//! identify, rename, delete; every bad input refused with a JSON error and nothing written; the
//! token; events listed from SQLite and streamed (SSE) from a running pipeline; metrics that parse.

use crate::common::{free_port, lfw_image, png_declaring, stderr, Daemon};
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A client that hands back 4xx/5xx answers instead of failing on them.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A server under test: its process (none for one started in this process) and its base url.
pub(crate) struct Server {
    pub(crate) daemon: Option<Daemon>,
    base: String,
    token: Option<String>,
}

impl Server {
    /// Starts the binary with `args` (which must make it listen on `port`) and waits for `/healthz`.
    pub(crate) fn start(dir: &Path, port: u16, args: &[&str]) -> Self {
        let daemon = Daemon::start(dir, args);
        let server = Self { daemon: Some(daemon), base: format!("http://127.0.0.1:{port}"), token: None };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = agent().get(&server.url("/healthz")).call() {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "no /healthz within 120 s; log:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `farsight serve` on a free port for `gallery`, with `extra` arguments before the command.
    fn serve(dir: &Path, gallery: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["serve", "--gallery", gallery.to_str().unwrap(), "--bind", &bind]);
        Self::start(dir, port, &args)
    }

    pub(crate) fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        answer(self.auth(agent().get(&self.url(path))).call())
    }

    pub(crate) fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.auth(agent().delete(&self.url(path))).call())
    }

    fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        let req = self.auth(agent().patch(&self.url(path))).header("Content-Type", "application/json");
        answer(req.send(body))
    }

    /// POSTs a multipart body of `(part name, file name, bytes)` parts.
    fn post_parts(&self, path: &str, parts: &[(&str, &str, Vec<u8>)]) -> (u16, Value) {
        let (content_type, body) = multipart(parts);
        answer(self.auth(agent().post(&self.url(path))).header("Content-Type", &content_type).send(&body[..]))
    }

    /// POSTs LFW photos as `photo` parts.
    fn post_photos(&self, path: &str, photos: &[(&str, u32)]) -> (u16, Value) {
        let parts: Vec<(&str, &str, Vec<u8>)> =
            photos.iter().map(|(who, n)| ("photo", *who, std::fs::read(lfw_image(who, *n)).unwrap())).collect();
        self.post_parts(path, &parts)
    }
}

/// The status and the JSON body of an answer (every answer of the API is JSON).
pub(crate) fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.expect("the server answers");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
    (status, json)
}

fn multipart(parts: &[(&str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "farsight-test-7d3f9a";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// The error message of a refused request, checked to be `{"error": "..."}` with that status.
pub(crate) fn error_of(got: (u16, Value), status: u16) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    got.1["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {}", got.1)).to_owned()
}

pub(crate) fn names(server: &Server) -> Vec<(String, u64)> {
    let (status, body) = server.get("/api/identities");
    assert_eq!(status, 200, "{body}");
    body["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_owned(), i["templates"].as_u64().unwrap()))
        .collect()
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

#[test]
fn serve_enrolls_identifies_renames_and_deletes_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let server = Server::serve(dir.path(), &g, &[]);
    assert!(names(&server).is_empty(), "no gallery yet: no identities");

    let (status, body) =
        server.post_photos("/api/identities/Tony%20Blair/photos?largest=true", &[("Tony_Blair", 1), ("Tony_Blair", 2)]);
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["created"].as_bool(), body["added"].as_u64()), (Some(true), Some(2)), "{body}");
    assert_eq!(names(&server), [("Tony Blair".to_owned(), 2)]);
    let (status, body) =
        server.post_photos("/api/identities/George%20W%20Bush/photos?largest=true", &[("George_W_Bush", 1)]);
    assert_eq!(status, 201, "{body}");
    // The CLI sees what the API wrote: one gallery, one truth.
    let out = crate::common::farsight(&["gallery", "--gallery", g.to_str().unwrap(), "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Tony Blair"));

    // A held-back photo of him is identified, with every field the API promises.
    let photo = std::fs::read(lfw_image("Tony_Blair", 3)).unwrap();
    let (status, body) = server.post_parts("/api/identify", &[("photo", "probe.jpg", photo.clone())]);
    assert_eq!(status, 200, "{body}");
    let faces = body["faces"].as_array().unwrap();
    let him = faces.iter().find(|f| f["identity"] == "Tony Blair").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(him["matched"], true);
    for key in ["box", "face_px", "aligned_px", "restored", "detector_score", "score"] {
        assert!(!him[key].is_null(), "{key} missing: {him}");
    }
    let candidates = him["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "top-k over two identities: {him}");
    assert_eq!(candidates[0]["name"], "Tony Blair");
    assert!(candidates[0]["score"].as_f64() > candidates[1]["score"].as_f64());

    // The same photo at two fifths of its size: his face is small, and restored before embedding.
    let small = image::imageops::resize(
        &image::load_from_memory(&photo).unwrap().to_rgb8(),
        100,
        100,
        image::imageops::FilterType::Triangle,
    );
    let (status, body) = server.post_parts("/api/identify", &[("photo", "small.jpg", jpeg(&small))]);
    assert_eq!(status, 200, "{body}");
    let faces = body["faces"].as_array().unwrap();
    assert!(!faces.is_empty() && faces.iter().all(|f| f["restored"] == true), "{body}");

    // Every face of a photo with two people, each with its own box and candidates.
    let (a, b) = (lfw_image("Tony_Blair", 3), lfw_image("George_W_Bush", 2));
    let (a, b) = (image::open(a).unwrap().to_rgb8(), image::open(b).unwrap().to_rgb8());
    let mut pair = image::RgbImage::new(a.width() + b.width(), a.height().max(b.height()));
    image::imageops::replace(&mut pair, &a, 0, 0);
    image::imageops::replace(&mut pair, &b, i64::from(a.width()), 0);
    let (status, body) = server.post_parts("/api/identify", &[("photo", "pair.jpg", jpeg(&pair))]);
    assert_eq!(status, 200, "{body}");
    let who: Vec<&str> = body["faces"].as_array().unwrap().iter().filter_map(|f| f["identity"].as_str()).collect();
    assert!(who.contains(&"Tony Blair") && who.contains(&"George W Bush"), "{body}");

    // More photos of someone enrolled: 200, not 201.
    let (status, body) = server.post_photos("/api/identities/Tony%20Blair/photos?largest=true", &[("Tony_Blair", 4)]);
    assert_eq!((status, body["created"].as_bool()), (200, Some(false)), "{body}");

    let (status, body) = server.patch("/api/identities/Tony%20Blair", r#"{"name": "Anthony Blair"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&server), [("Anthony Blair".to_owned(), 3), ("George W Bush".to_owned(), 1)]);
    let taken = error_of(server.patch("/api/identities/Anthony%20Blair", r#"{"name": "George W Bush"}"#), 409);
    assert!(taken.contains("already exists"), "{taken}");
    let unknown = error_of(server.patch("/api/identities/Nobody", r#"{"name": "Somebody"}"#), 404);
    assert!(unknown.contains("Nobody"), "{unknown}");

    let (status, body) = server.delete("/api/identities/Anthony%20Blair");
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&server), [("George W Bush".to_owned(), 1)]);
    error_of(server.delete("/api/identities/Anthony%20Blair"), 404);
    // He is a stranger again.
    let (_, body) = server.post_parts("/api/identify", &[("photo", "probe.jpg", photo)]);
    assert!(body["faces"].as_array().unwrap().iter().all(|f| f["identity"] != "Anthony Blair"), "{body}");
}

/// Sends raw bytes and reads the whole answer (for requests a client library will not send).
fn raw(base: &str, request: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_uploads_bad_names_and_bad_requests_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[http]\nmax_body_bytes = 200000\n").unwrap();
    let server = Server::serve(dir.path(), &g, &["--config", config.to_str().unwrap()]);
    // A photo with exactly one face (Tony_Blair_0001 has a second one in the background).
    let good = ("photo", "good.jpg", std::fs::read(lfw_image("Tony_Blair", 2)).unwrap());
    let enroll = |bad: (&str, &str, Vec<u8>)| server.post_parts("/api/identities/Someone/photos", &[good.clone(), bad]);

    // Each bad photo spoils the whole enroll, is named, and says what is wrong.
    let not_image = error_of(enroll(("photo", "notes.txt", b"shopping list: eggs, milk".to_vec())), 422);
    assert!(not_image.contains("notes.txt") && not_image.contains("nothing enrolled"), "{not_image}");
    let bomb = error_of(enroll(("photo", "bomb.png", png_declaring(60_000, 60_000))), 422);
    assert!(bomb.contains("bomb.png") && bomb.contains("60000x60000") && bomb.contains("max_pixels"), "{bomb}");
    let blank = error_of(
        enroll(("photo", "wall.jpg", jpeg(&image::RgbImage::from_pixel(200, 200, image::Rgb([90, 90, 90]))))),
        422,
    );
    assert!(blank.contains("wall.jpg: no face found"), "{blank}");
    let (a, b) = (
        image::open(lfw_image("Tony_Blair", 3)).unwrap().to_rgb8(),
        image::open(lfw_image("George_W_Bush", 2)).unwrap().to_rgb8(),
    );
    let mut pair = image::RgbImage::new(a.width() + b.width(), a.height());
    image::imageops::replace(&mut pair, &a, 0, 0);
    image::imageops::replace(&mut pair, &b, i64::from(a.width()), 0);
    let crowd = error_of(enroll(("photo", "pair.jpg", jpeg(&pair))), 422);
    assert!(crowd.contains("pair.jpg: ") && crowd.contains("faces found") && crowd.contains("largest"), "{crowd}");
    let empty = error_of(enroll(("photo", "empty.jpg", Vec::new())), 422);
    assert!(empty.contains("empty.jpg"), "{empty}");
    let bomb =
        error_of(server.post_parts("/api/identify", &[("photo", "bomb.png", png_declaring(60_000, 60_000))]), 422);
    assert!(bomb.contains("60000x60000"), "{bomb}");

    // Malformed requests.
    let wrong_part = error_of(server.post_parts("/api/identify", &[("image", "a.jpg", good.2.clone())]), 400);
    assert!(wrong_part.contains("\"photo\""), "{wrong_part}");
    error_of(server.post_parts("/api/identify", &[good.clone(), good.clone()]), 400);
    error_of(server.post_parts("/api/identify", &[]), 400);
    let json_body =
        server.auth(agent().post(&server.url("/api/identify"))).header("Content-Type", "application/json").send("{}");
    let not_multipart = error_of(answer(json_body), 415);
    assert!(not_multipart.contains("multipart/form-data"), "{not_multipart}");
    // Over http.max_body_bytes: refused from the declared length, before the body is read.
    let big = raw(
        &server.base,
        "POST /api/identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n\
         Content-Length: 50000000\r\nConnection: close\r\n\r\n",
    );
    assert!(big.starts_with("HTTP/1.1 413") && big.contains("max_body_bytes"), "{big}");
    // Over it without saying so in advance (a real multipart upload of ~600 kB).
    let huge = ("photo", "huge.jpg", vec![0xAB; 600_000]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let (content_type, body) = multipart(&[huge]);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/identify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut answer_text = String::new();
    for chunk in body.chunks(16_384) {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|_| s.write_all(chunk))
            .and_then(|_| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut reader = std::io::BufReader::new(s);
    let _ = reader.read_line(&mut answer_text);
    assert!(answer_text.starts_with("HTTP/1.1 413"), "{answer_text}");

    // Names: the gallery's rules, and nothing that reads as a path.
    for (path, expect) in [
        ("/api/identities/unknown/photos", "unknown"),
        ("/api/identities/..%2F..%2Fetc%2Fpasswd/photos", "cannot hold /"),
        ("/api/identities/%2E%2E/photos", "cannot hold /"),
        ("/api/identities/a%E2%80%AEb/photos", "invisible"),
        ("/api/identities/%20padded/photos", "space"),
    ] {
        let message = error_of(server.post_parts(path, std::slice::from_ref(&good)), 400);
        assert!(message.contains(expect), "{path}: {message}");
    }
    error_of(server.delete("/api/identities/..%2Fg.db"), 400);
    let body = error_of(server.patch("/api/identities/Someone", "not json"), 400);
    assert!(body.contains("{\"name\""), "{body}");
    error_of(server.patch("/api/identities/Someone", r#"{"name": "unknown"}"#), 400);
    let route = error_of(server.get("/api/nothing-here"), 404);
    assert!(route.contains("/api/nothing-here"), "{route}");
    error_of(server.delete("/api/identities"), 405);
    // No [sinks.sqlite]: events are not stored, and the answer says how to store them.
    let events = error_of(server.get("/api/events"), 404);
    assert!(events.contains("[sinks.sqlite]"), "{events}");

    assert!(!g.exists(), "no refused request may create the gallery");
    assert!(names(&server).is_empty());
}

#[test]
fn a_token_guards_every_route_but_healthz_and_is_required_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    // Bound beyond loopback without a token: validate and serve both refuse, saying what to do.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, "version = 1\n[http]\nbind = \"0.0.0.0:8080\"\n").unwrap();
    for args in [
        vec!["--config", open.to_str().unwrap(), "validate"],
        vec!["serve", "--gallery", g.to_str().unwrap(), "--bind", "0.0.0.0:0"],
    ] {
        let out = crate::common::farsight(&args);
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(stderr(&out).contains("http.token"), "{args:?}: {}", stderr(&out));
    }

    let token = "s3cret-token-for-tests-0123";
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, format!("version = 1\n[http]\ntoken = \"{token}\"\n")).unwrap();
    let mut server = Server::serve(dir.path(), &g, &["--config", config.to_str().unwrap()]);
    for path in ["/api/identities", "/api/events", "/metrics", "/readyz", "/api/status", "/api/crops/x.png"] {
        let missing = error_of(server.get(path), 401);
        assert!(missing.contains("Authorization: Bearer"), "{missing}");
    }
    server.token = Some("s3cret-token-for-tests-0124".into());
    error_of(server.get("/api/identities"), 401);
    error_of(server.post_photos("/api/identities/Tony%20Blair/photos", &[("Tony_Blair", 1)]), 401);
    assert!(!g.exists(), "an unauthorized enroll writes nothing");
    server.token = Some(token.into());
    assert_eq!(server.get("/api/identities").0, 200);
    assert_eq!(server.get("/readyz").0, 200, "serve is ready once its models are loaded");
    // The probe of liveness and the page's own files need no token (they show no data).
    for path in ["/healthz", "/", "/app.js", "/app.css"] {
        assert_eq!(agent().get(&server.url(path)).call().unwrap().status(), 200, "{path}");
    }
}

/// Every sample of a Prometheus text exposition, as (name with labels, value); panics on a line
/// that is not one.
pub(crate) fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(comment.starts_with("HELP ") || comment.starts_with("TYPE "), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        samples.push((name.to_owned(), value));
    }
    samples
}

pub(crate) fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no sample {name} in {samples:?}")).1
}

/// Reads `GET /api/events/stream` on a thread; each SSE `event` message's data arrives on the
/// returned channel as JSON.
pub(crate) fn subscribe(server: &Server) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let response = agent().get(&server.url("/api/events/stream")).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                if kind == "event" && tx.send(serde_json::from_str(data).expect("SSE data is JSON")).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn run_streams_events_lists_them_from_sqlite_and_exports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[track]\nlost_after_s = 0.3\n[sinks]\nstdout = true\n[sinks.sqlite]\n")
        .unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let (cfg, gs, src) = (config.to_str().unwrap(), g.to_str().unwrap(), frames.to_str().unwrap());
    let args = ["--config", cfg, "run", "--live", "--gallery", gs, "--source", src, "--http-bind", &bind];
    let mut server = Server::start(dir.path(), port, &args);
    let stream = subscribe(&server);

    // A stranger first (nobody enrolled), streamed as it happens.
    let first =
        stream.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| panic!("no SSE event; log:\n{}", server.log()));
    assert_eq!((first["camera"].as_str(), first["event"].as_str()), (Some("frames"), Some("unknown")), "{first}");

    // Enrolled through the API while the pipeline runs: the next visits are matches. `run` freed
    // the photo detector after its start-up check (the windows run YuNet); the photos load it.
    let (status, body) =
        server.post_photos("/api/identities/Tony%20Blair/photos?largest=true", &[("Tony_Blair", 1), ("Tony_Blair", 2)]);
    assert_eq!(status, 201, "{body}");
    assert!(server.log().contains("centerface.onnx loaded again for its first use"), "{}", server.log());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let e = stream.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a match on the stream");
        if e["event"] == "match" {
            assert_eq!(e["identity"], "Tony Blair");
            break;
        }
    }

    // The SQLite sink stored them (its own queue: the stream can be ahead of the table, so wait for
    // the rows rather than race them); the API lists and filters them (newest first).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.get("/api/events?camera=frames&limit=1000");
        assert_eq!(status, 200, "{body}");
        let all = body["events"].as_array().unwrap().clone();
        if all.iter().any(|e| e["event"] == "unknown") && all.iter().any(|e| e["event"] == "match") {
            break;
        }
        assert!(Instant::now() < deadline, "the stored events never held both kinds: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, matches) = server.get("/api/events?kind=match&identity=Tony%20Blair");
    assert!(matches["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["event"] == "match" && e["identity"] == "Tony Blair"));
    let (_, page) = server.get("/api/events?limit=1&offset=1");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let (_, none) = server.get("/api/events?camera=elsewhere");
    assert!(none["events"].as_array().unwrap().is_empty());
    let (_, future) = server.get(&format!("/api/events?since={}", u64::MAX / 2));
    assert!(future["events"].as_array().unwrap().is_empty());
    let (_, past) = server.get("/api/events?until=1");
    assert!(past["events"].as_array().unwrap().is_empty());
    assert!(error_of(server.get("/api/events?kind=visitor"), 400).contains("match"));
    assert!(error_of(server.get("/api/events?limit=0"), 400).contains("limit"));
    assert!(error_of(server.get("/api/events?since=yesterday"), 400).contains("Unix"));

    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(ready["cameras"][0]["frames"].as_u64() > Some(0), "{ready}");

    let response = agent().get(&server.url("/metrics")).call().unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.into_body().read_to_string().unwrap();
    let samples = parse_metrics(&text);
    assert!(sample(&samples, "farsight_stage_in_total{stage=\"camera-frames\"}") > 0.0, "{text}");
    assert!(sample(&samples, "farsight_stage_out_total{stage=\"recognize\"}") > 0.0);
    assert!(sample(&samples, "farsight_events_total{kind=\"unknown\",phase=\"final\"}") > 0.0, "{text}");
    assert!(sample(&samples, "farsight_sink_delivered_total{sink=\"sqlite\"}") > 0.0);
    assert_eq!(sample(&samples, "farsight_sink_dropped_total{sink=\"sqlite\"}"), 0.0);
    assert!(sample(&samples, "farsight_stage_latency_seconds_count{stage=\"recognize\"}") > 0.0);
    assert!(sample(&samples, "farsight_stage_latency_seconds_bucket{stage=\"recognize\",le=\"+Inf\"}") > 0.0);
    assert!(sample(&samples, "farsight_resident_memory_bytes") > 10e6);
    // The binary's allocator keeps the models' weights in its big-block heap.
    let live = sample(&samples, "farsight_big_block_heap_bytes{kind=\"live\"}");
    assert!(live > 10e6, "{text}");
    assert!(sample(&samples, "farsight_big_block_heap_bytes{kind=\"high_water\"}") >= live);
    assert_eq!(sample(&samples, "farsight_ready"), 1.0);

    let (code, _) = server.daemon.take().unwrap().terminate();
    assert!(code.success(), "exit {code:?}");
}

#[test]
fn writes_during_shutdown_are_refused_and_write_nothing() {
    use farsight::http::{Hub, Server as HttpServer, ServerContext};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let config = farsight::Config::default();
    let stop = Arc::new(AtomicBool::new(true));
    let cx = ServerContext {
        http: farsight::http::HttpConfig { bind: "127.0.0.1:0".into(), ..Default::default() },
        images: config.images,
        gallery: g.clone(),
        threshold: config.matching.threshold,
        top_k: config.matching.top_k,
        events_stored: true,
        crops: None,
        recognizer: Arc::new(farsight::Recognizer::load(&config).unwrap()),
        hub: Arc::new(Hub::default()),
        live: Arc::default(),
        pipeline: true,
        stop,
    };
    let http = HttpServer::start(cx).unwrap();
    let server = Server { daemon: None, base: format!("http://{}", http.local_addr()), token: None };
    let enroll = error_of(server.post_photos("/api/identities/Tony%20Blair/photos", &[("Tony_Blair", 1)]), 503);
    assert!(enroll.contains("shutting down") && enroll.contains("nothing was written"), "{enroll}");
    error_of(server.patch("/api/identities/Tony%20Blair", r#"{"name": "Anthony Blair"}"#), 503);
    error_of(server.delete("/api/identities/Tony%20Blair"), 503);
    error_of(server.get("/readyz"), 503);
    for (path, body) in [
        ("/api/visitors/v1/name", r#"{"name": "Ada"}"#),
        ("/api/visitors/v1/merge", r#"{"into": "v2"}"#),
        ("/api/visitors/v1/ignore", ""),
    ] {
        let req = server.auth(agent().post(&server.url(path))).header("Content-Type", "application/json");
        error_of(answer(req.send(body)), 503);
    }
    error_of(server.delete("/api/visitors/v1"), 503);
    // Reads still work while the daemon drains.
    assert_eq!(server.get("/api/identities").0, 200);
    assert_eq!(server.get("/api/visitors").0, 200);
    assert!(!g.exists(), "nothing was written");
    http.shutdown(Duration::from_secs(1));
    assert!(std::net::TcpStream::connect(server.base.trim_start_matches("http://")).is_err(), "stopped");
}

#[test]
fn serve_streams_what_another_process_stores() {
    use farsight::sink::EventSink;
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let config = dir.path().join("farsight.toml");
    std::fs::write(&config, "version = 1\n[sinks.sqlite]\n").unwrap();
    // A `run` elsewhere stores events in the gallery database (here: the SQLite sink itself).
    let sqlite = farsight::config::SqliteSinkConfig::default();
    let mut sink = farsight::sink::sqlite::SqliteSink::open(&g, &sqlite).unwrap();
    sink.deliver(&crate::sinks::event("porch", 1)).unwrap();
    let server = Server::serve(dir.path(), &g, &["--config", config.to_str().unwrap()]);
    let stream = subscribe(&server);
    // Only new events are streamed: the one stored before is listed, not sent.
    std::thread::sleep(Duration::from_secs(1));
    sink.deliver(&crate::sinks::event("porch", 2)).unwrap();
    let got = stream.recv_timeout(Duration::from_secs(30)).expect("the stored event is streamed");
    assert_eq!((got["camera"].as_str(), got["track"].as_u64()), (Some("porch"), Some(2)), "{got}");
    let (status, body) = server.get("/api/events?camera=porch");
    assert_eq!(status, 200, "{body}");
    let tracks: Vec<u64> = body["events"].as_array().unwrap().iter().filter_map(|e| e["track"].as_u64()).collect();
    assert_eq!(tracks, [2, 1], "newest first");
}
