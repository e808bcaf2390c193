//! The operator's page in a real headless browser (Debian's chromium through chromedriver), against
//! the real binary: `farsight run` on an image-folder camera with crops on, the HTTP server on a
//! port of the system's choosing (`FARSIGHT_HTTP_BIND=127.0.0.1:0`) and an access token. Through
//! the page: paste the token, enroll with a file upload, see the identity listed with its
//! thumbnail, see a match event arrive on the live stream with its best shot, name a visitor (a
//! stranger on a second camera) into the gallery, identify a photo, read the per-camera counters,
//! rename and remove.
//!
//! Screenshots of each view go to `$CARGO_TARGET_TMPDIR/page-screenshots/`; with
//! `FARSIGHT_SCREENSHOTS=docs/screenshots` they are copied there too (README "The page").

use crate::common::{lfw_image, Daemon};
use crate::webdriver::Browser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "page-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// The address `farsight run` logs once its server listens (it was given port 0).
fn listening_on(daemon: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = daemon.log();
        if let Some(at) = log.find("listening on http://") {
            let rest = &log[at + "listening on http://".len()..];
            return rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the HTTP server never listened; log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` with the token: the status and the JSON body.
fn get(base: &str, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(format!("{base}{path}")).header("Authorization", format!("Bearer {TOKEN}")).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

/// `GET path` with the token: the status, the content type and the body's bytes.
fn get_bytes(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(format!("{base}{path}")).header("Authorization", format!("Bearer {TOKEN}")).call().unwrap();
    let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (r.status().as_u16(), kind, r.body_mut().read_to_vec().unwrap())
}

/// Where this run's screenshots go, and the folder they are copied to when asked.
struct Shots {
    dir: PathBuf,
    copy_to: Option<PathBuf>,
}

impl Shots {
    fn new() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let copy_to = std::env::var_os("FARSIGHT_SCREENSHOTS").map(|d| {
            let d = PathBuf::from(d);
            let d = if d.is_absolute() { d } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(d) };
            std::fs::create_dir_all(&d).unwrap();
            d
        });
        Self { dir, copy_to }
    }

    fn take(&self, browser: &Browser, name: &str) {
        // Let pictures decode and the flash of a new event fade.
        std::thread::sleep(Duration::from_millis(1600));
        let png = browser.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let file = format!("{name}.png");
        std::fs::write(self.dir.join(&file), &png).unwrap();
        if let Some(to) = &self.copy_to {
            std::fs::write(to.join(&file), &png).unwrap();
        }
        eprintln!("page: screenshot {} ({} kB)", self.dir.join(&file).display(), png.len() / 1024);
    }
}

/// A file's path as a file input takes it (chromedriver wants it canonical).
fn upload(path: PathBuf) -> String {
    std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_str().unwrap().to_owned()
}

/// Shows a view by its tab, as a user would.
fn open_view(browser: &Browser, view: &str) {
    browser.click(&browser.find(&format!("#nav a[data-view={view}]"), WAIT));
    browser.wait(
        &format!("the {view} view shows"),
        WAIT,
        "return !document.getElementById('view-' + arguments[0]).hidden;",
        json!([view]),
    );
}

#[test]
fn the_page_enrolls_lists_streams_identifies_and_counts_in_a_real_browser() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(lfw_image("Tony_Blair", 3), frames.join("a.jpg")).unwrap();
    // A second camera sees someone never enrolled: a stranger, who becomes a visitor.
    let door = dir.path().join("door");
    std::fs::create_dir(&door).unwrap();
    std::fs::copy(lfw_image("George_W_Bush", 2), door.join("b.jpg")).unwrap();
    let crops = dir.path().join("crops");
    let config = dir.path().join("farsight.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[http]\ntoken = \"{TOKEN}\"\n[track]\nlost_after_s = 0.3\n[sinks.sqlite]\n\
             [crops]\nenabled = true\ndir = \"{}\"\n",
            crops.display()
        ),
    )
    .unwrap();
    let (cfg, gs, src) = (config.to_str().unwrap(), g.to_str().unwrap(), frames.to_str().unwrap());
    // Common's Daemon sets FARSIGHT_HTTP_BIND=127.0.0.1:0: the system picks the port, the log says it.
    // [visitors] is on by default: the unknowns are clustered into visitors.
    let args = ["--config", cfg, "run", "--live", "--gallery", gs, "--source", src, "--source", door.to_str().unwrap()];
    let daemon = Daemon::start(dir.path(), &args);
    let base = format!("http://{}", listening_on(&daemon));
    let browser = Browser::start(1100, 800);
    let shots = Shots::new();

    // The page itself needs no token; its first API call is refused, and it asks for one.
    browser.goto(&format!("{base}/"));
    let input = browser.find("#token-bar:not([hidden]) #token-input", WAIT);
    browser.type_into(&input, TOKEN);
    browser.click(&browser.find("#token-save", WAIT));
    browser.wait(
        "the gallery loads with the token",
        WAIT,
        "return document.getElementById('token-bar').hidden && \
         /Nobody enrolled/.test(document.getElementById('gallery-status').textContent);",
        json!([]),
    );

    // Enroll through the page: a name, two photos through the file input, the largest face.
    let (p1, p2) = (upload(lfw_image("Tony_Blair", 1)), upload(lfw_image("Tony_Blair", 2)));
    browser.type_into(&browser.find("#enroll-name", WAIT), "Tony Blair");
    browser.type_into(&browser.find("#enroll-files", WAIT), &format!("{p1}\n{p2}"));
    browser.click(&browser.find("#enroll-largest", WAIT));
    browser.click(&browser.find("#enroll-submit", WAIT));
    let listed = browser.wait(
        "Tony Blair listed with 2 photos and a thumbnail",
        Duration::from_secs(60),
        "const c = document.querySelector('.identity[data-name=\"Tony Blair\"]'); \
         const img = c && c.querySelector('img.face'); \
         return c && img && img.complete && img.naturalWidth > 0 ? c.innerText : null;",
        json!([]),
    );
    assert!(listed.as_str().unwrap().contains("2 photos"), "{listed}");
    assert!(browser.text_of_page().contains("enrolled Tony Blair: 2 photo(s)"));
    let (_, ids) = get(&base, "/api/identities");
    assert_eq!(ids["identities"][0]["name"], "Tony Blair", "{ids}");
    assert!(ids["identities"][0]["thumbnail"].as_str().is_some_and(|t| t.starts_with("/api/crops/identity-")), "{ids}");
    shots.take(&browser, "gallery");

    // A match arrives on the live stream (the camera keeps showing him), with its best shot.
    open_view(&browser, "events");
    let event = browser.wait(
        "a live match event with its best shot",
        Duration::from_secs(60),
        "const c = document.querySelector('.event[data-kind=match][data-live][data-identity=\"Tony Blair\"]'); \
         const img = c && c.querySelector('img.face'); \
         return c && img && img.complete && img.naturalWidth > 0 ? c.innerText : null;",
        json!([]),
    );
    assert!(event.as_str().unwrap().contains("camera frames"), "{event}");
    assert_eq!(browser.eval("return document.getElementById('events-live').textContent;", json!([])), "live");
    shots.take(&browser, "events");

    // The best shot behind the page's picture: a stored event's crop_url serves the PNG; nothing
    // but farsight's own crops and thumbnails is served from there (no path, no dot file, no link).
    let (_, stored) = get(&base, "/api/events?kind=match&limit=1");
    let url = stored["events"][0]["best_shot"]["crop_url"].as_str().unwrap_or_else(|| panic!("{stored}")).to_owned();
    let (status, kind, png) = get_bytes(&base, &url);
    assert_eq!((status, kind.as_str()), (200, "image/png"), "{url}");
    assert!(png.starts_with(b"\x89PNG"), "{url}");
    std::os::unix::fs::symlink(&g, crops.join("farsight-planted-1-1.png")).unwrap();
    for path in [
        "/api/crops/..%2Fg.db",
        "/api/crops/%2E%2E%2Ffarsight.toml",
        "/api/crops/.farsight-crops",
        "/api/crops/farsight-planted-1-1.png",
        "/api/crops/g.db",
    ] {
        let (status, body) = get(&base, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("crop")), "{path}: {body}");
    }

    // Visitors: the stranger at the door is listed with the best shot, visits and cameras, and
    // named through the page: the kept embeddings become an identity and the visitor is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (stranger, first_seen) = loop {
        let (status, visitors) = get(&base, "/api/visitors");
        assert_eq!(status, 200, "{visitors}");
        let at_door = visitors["visitors"].as_array().unwrap().iter().find(|v| {
            v["cameras"].as_array().is_some_and(|c| c.iter().any(|c| c["camera"] == "door"))
                && v["best_shot_url"].is_string()
        });
        if let Some(v) = at_door {
            break (v["id"].as_str().unwrap().to_owned(), v["first_seen_ms"].as_u64().unwrap());
        }
        assert!(Instant::now() < deadline, "no visitor from the door camera: {visitors}");
        std::thread::sleep(Duration::from_millis(200));
    };
    open_view(&browser, "visitors");
    let card = format!(".visitor[data-visitor=\"{stranger}\"]");
    let text = browser.wait(
        "the stranger's card with the best shot",
        WAIT,
        "const c = document.querySelector(arguments[0]); const img = c && c.querySelector('img.face'); \
         return c && img && img.complete && img.naturalWidth > 0 ? c.innerText : null;",
        json!([card]),
    );
    let text = text.as_str().unwrap();
    assert!(
        text.contains(&format!("visitor {stranger}")) && text.contains("door (") && text.contains("first "),
        "{text}"
    );
    shots.take(&browser, "visitors");
    // Ignore and unignore: the card's toggle, and the stored flag.
    for (button, ignored) in [("Ignore", true), ("Unignore", false)] {
        let toggle = format!("{card} button.ignore");
        assert_eq!(browser.eval("return document.querySelector(arguments[0]).textContent;", json!([toggle])), button);
        browser.click(&browser.find(&toggle, WAIT));
        browser.wait(
            &format!("the card after {button}"),
            WAIT,
            "const c = document.querySelector(arguments[0]); const b = c && c.querySelector('button.ignore'); \
             return c && b && (c.dataset.ignored === 'true') === arguments[1] && \
               b.textContent === (arguments[1] ? 'Unignore' : 'Ignore');",
            json!([card, ignored]),
        );
        let (_, v) = get(&base, &format!("/api/visitors/{stranger}"));
        assert_eq!(v["ignored"], ignored, "{v}");
    }
    browser.type_into(&browser.find(&format!("{card} .name-form input"), WAIT), "Visitor One");
    browser.click(&browser.find(&format!("{card} .name-form button"), WAIT));
    browser.wait(
        "the named visitor is enrolled",
        WAIT,
        "return /enrolled as Visitor One/.test(document.getElementById('visitors-status').textContent);",
        json!([]),
    );
    let (_, ids) = get(&base, "/api/identities");
    let named = ids["identities"].as_array().unwrap().iter().find(|i| i["name"] == "Visitor One");
    assert!(named.is_some_and(|i| i["templates"].as_u64() >= Some(1)), "{ids}");
    // The stranger is still at the door: a visit decided before the pipeline picked the new
    // templates up founds a new visitor, which may be given the same id (ids of deleted visitors
    // are reused), so the named one is told apart by its first sighting.
    let (_, visitors) = get(&base, "/api/visitors");
    assert!(
        visitors["visitors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["id"] != stranger.as_str() || v["first_seen_ms"].as_u64().is_some_and(|t| t > first_seen)),
        "{visitors}"
    );

    // Identify a photo: every face with its box and candidates.
    open_view(&browser, "identify");
    browser.type_into(&browser.find("#identify-file", WAIT), &upload(lfw_image("Tony_Blair", 3)));
    browser.click(&browser.find("#identify-submit", WAIT));
    let row = browser.wait(
        "the identified face",
        Duration::from_secs(60),
        "const r = document.querySelector('.face-row'); const b = document.querySelector('.box.match'); \
         const img = document.querySelector('.photo img'); \
         return r && b && img && img.complete && img.naturalWidth > 0 ? r.innerText : null;",
        json!([]),
    );
    assert!(row.as_str().unwrap().contains("Tony Blair"), "{row}");
    shots.take(&browser, "identify");

    // Per-camera counters.
    open_view(&browser, "counters");
    browser.wait(
        "the camera's counters",
        WAIT,
        "const t = document.getElementById('counters').innerText; return /frames/.test(t) && /Per camera/.test(t);",
        json!([]),
    );
    shots.take(&browser, "counters");

    // A write that another site's page makes a browser send is refused, token or not.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .delete(format!("{base}/api/identities/Tony%20Blair"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Origin", "http://evil.example")
        .call()
        .unwrap();
    let body: Value = r.body_mut().read_json().unwrap();
    assert_eq!(r.status(), 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("another site"), "{body}");
    assert_eq!(get(&base, "/api/identities").1["identities"][0]["name"], "Tony Blair");

    // Rename and remove through the page.
    open_view(&browser, "gallery");
    browser.click(&browser.find(".identity[data-name=\"Tony Blair\"] button.rename", WAIT));
    let rename = browser.find(".identity[data-name=\"Tony Blair\"] form input", WAIT);
    browser.clear(&rename);
    browser.type_into(&rename, "Anthony Blair\u{E007}");
    browser.find(".identity[data-name=\"Anthony Blair\"] img.face", WAIT);

    // On a phone.
    browser.resize(390, 844);
    shots.take(&browser, "phone-gallery");
    open_view(&browser, "events");
    shots.take(&browser, "phone-events");
    open_view(&browser, "gallery");

    let remove = browser.find(".identity[data-name=\"Anthony Blair\"] button.danger", WAIT);
    browser.click(&remove);
    browser.click(&remove);
    browser.wait(
        "the identity is removed",
        WAIT,
        "return !document.querySelector('.identity[data-name=\"Anthony Blair\"]') && \
         /removed Anthony Blair/.test(document.body.innerText);",
        json!([]),
    );
    let (_, ids) = get(&base, "/api/identities");
    let names: Vec<&str> = ids["identities"].as_array().unwrap().iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["Visitor One"], "{ids}");
    assert!(
        !std::fs::read_dir(&crops).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("identity-")),
        "the thumbnail goes with the identity"
    );
    drop(browser);
    let (code, _) = daemon.terminate();
    assert!(code.success(), "exit {code:?}");
    eprintln!("page: the browser test took {:.1} s", started.elapsed().as_secs_f64());
}
