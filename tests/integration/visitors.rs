//! Visitors against the real binary: `farsight run` on three looping one-photo cameras (three
//! strangers, each seen again every second as a new track), the HTTP API and the gallery file.
//! Unknown events carry a stable visitor; bad ids are refused and write nothing; a merge moves
//! visits and cameras; an ignored visitor's events stop (and are counted); naming enrolls the
//! visitor (its next visits are matches); forgetting deletes its rows, stored events and crops.

use crate::common::{free_port, lfw_image};
use crate::http::{agent, answer, error_of, names, parse_metrics, sample, subscribe, Server};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn post_json(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let req = server.auth(agent().post(&server.url(path))).header("Content-Type", "application/json");
    answer(req.send(body))
}

/// Events off the stream until `done` says so (panics after `within`).
fn until(stream: &Receiver<Value>, within: Duration, what: &str, mut done: impl FnMut(&Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = stream.recv_timeout(left).unwrap_or_else(|_| panic!("no {what} within {within:?}"));
        if done(&e) {
            return;
        }
    }
}

fn visitor_ids(server: &Server) -> Vec<String> {
    let (status, body) = server.get("/api/visitors");
    assert_eq!(status, 200, "{body}");
    body["visitors"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect()
}

fn suppressed(server: &Server) -> f64 {
    let text = agent().get(&server.url("/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    let samples = parse_metrics(&text);
    if samples.iter().any(|(n, _)| n == "farsight_visitor_events_suppressed_total") {
        sample(&samples, "farsight_visitor_events_suppressed_total")
    } else {
        0.0
    }
}

#[test]
fn unknowns_become_visitors_that_can_be_merged_ignored_named_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let crops = dir.path().join("crops");
    let mut sources = Vec::new();
    for (cam, who, n) in [("a", "Tony_Blair", 3), ("b", "George_W_Bush", 2), ("c", "Colin_Powell", 1)] {
        let folder = dir.path().join(cam);
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(lfw_image(who, n), folder.join("face.jpg")).unwrap();
        sources.push(folder.to_str().unwrap().to_owned());
    }
    let config = dir.path().join("farsight.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[track]\nlost_after_s = 0.3\n[sinks]\nstdout = true\n[sinks.sqlite]\n[crops]\nenabled = true\n\
             dir = {:?}\n",
            crops.to_str().unwrap()
        ),
    )
    .unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let (cfg, gs) = (config.to_str().unwrap(), g.to_str().unwrap());
    let mut args = vec!["--config", cfg, "run", "--live", "--gallery", gs, "--http-bind", &bind];
    for s in &sources {
        args.extend(["--source", s.as_str()]);
    }
    let mut server = Server::start(dir.path(), port, &args);
    let stream = subscribe(&server);

    // Each stranger's every visit (a new track each second) carries the same visitor, with the
    // visit count going up and the camera listed.
    let mut seen: HashMap<String, Vec<(u64, String, u64)>> = HashMap::new();
    until(&stream, Duration::from_secs(180), "two visits of each stranger", |e| {
        assert_eq!(e["event"], "unknown", "{e}");
        let (cam, visitor) = (e["camera"].as_str().unwrap(), e["visitor"].as_str().unwrap_or_else(|| panic!("{e}")));
        assert_eq!(e["visitor_cameras"][0].as_str(), Some(cam), "{e}");
        let visits = e["visitor_visits"].as_u64().unwrap();
        seen.entry(cam.to_owned()).or_default().push((e["track"].as_u64().unwrap(), visitor.to_owned(), visits));
        ["a", "b", "c"].iter().all(|c| seen.get(*c).is_some_and(|v| v.len() >= 2))
    });
    let mut ids = HashMap::new();
    for (cam, visits) in &seen {
        assert!(
            visits.windows(2).all(|w| w[0].1 == w[1].1 && w[0].0 != w[1].0 && w[1].2 > w[0].2),
            "{cam}: {visits:?}"
        );
        ids.insert(cam.as_str(), visits[0].1.clone());
    }
    let (va, vb, vc) = (ids["a"].clone(), ids["b"].clone(), ids["c"].clone());
    assert!(va != vb && vb != vc && va != vc, "{ids:?}");

    // Listed with visits, cameras and the best shot (crops are on), which is served as a PNG.
    let (status, v) = server.get(&format!("/api/visitors/{va}"));
    assert_eq!(status, 200, "{v}");
    assert!(v["visits"].as_u64() >= Some(2) && v["ignored"] == false, "{v}");
    assert_eq!(v["cameras"][0]["camera"], "a", "{v}");
    let url = v["best_shot_url"].as_str().unwrap_or_else(|| panic!("no best shot: {v}"));
    assert_eq!(url, format!("/api/visitors/{va}/best_shot"));
    let mut shot = agent().get(&server.url(url)).call().unwrap();
    assert_eq!(shot.status(), 200);
    assert!(shot.body_mut().read_to_vec().unwrap().starts_with(b"\x89PNG"));
    assert!(visitor_ids(&server).len() >= 3);

    // Bad ids and bodies: a clear 4xx, and nothing written.
    let before = visitor_ids(&server);
    assert!(error_of(server.get("/api/visitors/..%2Fx"), 400).contains("not a visitor id"));
    assert!(error_of(server.get("/api/visitors/v999999"), 404).contains("v999999"));
    error_of(server.get("/api/visitors/v999999/best_shot"), 404);
    error_of(post_json(&server, "/api/visitors/..%2F..%2Fetc/name", r#"{"name": "Ghost"}"#), 400);
    error_of(post_json(&server, "/api/visitors/v999999/name", r#"{"name": "Ghost"}"#), 404);
    assert!(error_of(post_json(&server, &format!("/api/visitors/{va}/name"), r#"{"name": "unknown"}"#), 400)
        .contains("unknown"));
    assert!(error_of(post_json(&server, &format!("/api/visitors/{va}/name"), r#"{"nom": "x"}"#), 400).contains("name"));
    let into_itself = format!(r#"{{"into": "{va}"}}"#);
    assert!(error_of(post_json(&server, &format!("/api/visitors/{va}/merge"), &into_itself), 400).contains("itself"));
    error_of(post_json(&server, &format!("/api/visitors/{va}/merge"), r#"{"into": "../x"}"#), 400);
    error_of(post_json(&server, &format!("/api/visitors/{va}/merge"), r#"{"into": "v999999"}"#), 404);
    error_of(post_json(&server, "/api/visitors/x1/ignore", ""), 400);
    error_of(post_json(&server, &format!("/api/visitors/{va}/ignore"), r#"{"ignore": 1}"#), 400);
    error_of(server.delete("/api/visitors/v999999"), 404);
    assert!(names(&server).is_empty(), "nothing was enrolled");
    let after = visitor_ids(&server);
    assert!(before.iter().all(|id| after.contains(id)), "{before:?} -> {after:?}");
    assert!(!after.iter().any(|v| v.contains("999999")));

    // Merge: b takes in c's visits and cameras; c is gone.
    let (status, merged) = post_json(&server, &format!("/api/visitors/{vc}/merge"), &format!(r#"{{"into": "{vb}"}}"#));
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["merged"], vc.as_str());
    let cams: Vec<&str> =
        merged["into"]["cameras"].as_array().unwrap().iter().map(|c| c["camera"].as_str().unwrap()).collect();
    assert!(cams.contains(&"b") && cams.contains(&"c"), "{merged}");
    assert!(merged["into"]["visits"].as_u64() >= Some(4), "{merged}");
    error_of(server.get(&format!("/api/visitors/{vc}")), 404);

    // Ignore b: its events stop reaching the sinks and the stream, and are counted.
    let (status, ignored) = post_json(&server, &format!("/api/visitors/{vb}/ignore"), "");
    assert_eq!((status, &ignored["ignored"]), (200, &Value::Bool(true)), "{ignored}");
    // Deadlines are generous: the whole suite runs several daemons at once on two cores.
    let deadline = Instant::now() + Duration::from_secs(180);
    while suppressed(&server) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no suppressed event counted; visitors: {}; log:\n{}",
            server.get("/api/visitors").1,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    while stream.try_recv().is_ok() {}
    // Watch until camera a has had two more visits (the pipeline is still publishing).
    let mut from_a = 0;
    until(&stream, Duration::from_secs(180), "two more events of camera a", |e| {
        assert_ne!(e["visitor"].as_str(), Some(vb.as_str()), "an ignored visitor's event was sent: {e}");
        from_a += usize::from(e["camera"] == "a");
        from_a >= 2
    });
    let (_, b_now) = server.get(&format!("/api/visitors/{vb}"));
    assert!(b_now["suppressed"].as_u64() >= Some(1), "{b_now}");

    // Name a: its kept faces become Tony Blair's templates, it is no visitor any more, and his
    // next visits are matches.
    let (status, named) = post_json(&server, &format!("/api/visitors/{va}/name"), r#"{"name": "Tony Blair"}"#);
    assert_eq!(status, 201, "{named}");
    let templates = named["templates"].as_u64().unwrap();
    assert!((1..=5).contains(&templates), "{named}");
    assert_eq!(names(&server), [("Tony Blair".to_owned(), templates)]);
    error_of(server.get(&format!("/api/visitors/{va}")), 404);
    until(&stream, Duration::from_secs(180), "a match for the named visitor", |e| {
        e["camera"] == "a" && e["event"] == "match" && e["identity"] == "Tony Blair"
    });

    // Forget b: its rows, its stored events and the crops of it go.
    let (_, stored) = server.get("/api/events?limit=1000");
    let crops_of_b: Vec<String> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["visitor"].as_str() == Some(vb.as_str()))
        .filter_map(|e| e["best_shot"]["crop"].as_str().map(str::to_owned))
        .collect();
    assert!(!crops_of_b.is_empty(), "stored events of {vb} with crops: {stored}");
    let (status, gone) = server.delete(&format!("/api/visitors/{vb}"));
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["forgotten"], vb.as_str());
    assert!(gone["events"].as_u64() >= Some(1) && gone["crops"].as_u64() >= Some(1), "{gone}");
    error_of(server.get(&format!("/api/visitors/{vb}")), 404);
    assert!(crops_of_b.iter().all(|c| !std::path::Path::new(c).exists()), "crops left: {crops_of_b:?}");
    let (_, stored) = server.get("/api/events?limit=1000");
    assert!(!stored["events"].as_array().unwrap().iter().any(|e| e["visitor"].as_str() == Some(vb.as_str())));
    let conn = rusqlite::Connection::open(&g).unwrap();
    let id: i64 = vb[1..].parse().unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM visitors WHERE id = ?1) + (SELECT COUNT(*) FROM visitor_embeddings
             WHERE visitor_id = ?1) + (SELECT COUNT(*) FROM visitor_cameras WHERE visitor_id = ?1)",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    // Forgotten means forgotten, the ignore too: b's next visit founds a new visitor.
    until(&stream, Duration::from_secs(180), "a new visitor for camera b", |e| {
        e["camera"] == "b" && e["visitor"].as_str().is_some_and(|v| v != vb && v != va)
    });

    let (code, _) = server.daemon.take().unwrap().terminate();
    assert!(code.success(), "exit {code:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&g).unwrap().permissions().mode() & 0o777, 0o600, "the gallery stays private");
    }
}

#[test]
fn validate_refuses_bad_visitor_settings_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(&cfg, "version = 1\n[visitors]\nthreshold = 1.5\nretention_days = 0\n").unwrap();
    let out = crate::common::farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(!out.status.success());
    let err = crate::common::stderr(&out);
    assert!(err.contains("line 3: visitors.threshold = 1.5"), "{err}");
    assert!(err.contains("line 4: visitors.retention_days = 0") && err.contains("enabled = false"), "{err}");
    std::fs::write(&cfg, "version = 1\n[visitors]\nlinkage = \"average\"\n").unwrap();
    let out = crate::common::farsight(&["--config", cfg.to_str().unwrap(), "validate"]);
    assert!(crate::common::stderr(&out).contains("average"), "{}", crate::common::stderr(&out));
}
