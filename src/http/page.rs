//! The operator's page: one HTML file, one script and one style sheet under `src/http/page/`,
//! embedded in the binary at build time (no CDN, no build step: the box has no internet), served
//! at `/`, `/app.js` and `/app.css`; and `GET /api/status`, the JSON the page's counters view
//! reads (per-camera frames and events, stages, readiness).
//!
//! The three files are public (no token): they hold no data, and a browser cannot send a header
//! when it opens a page. The script asks for the token when the API answers 401, keeps it in the
//! browser's localStorage and sends it as `Authorization: Bearer` with every request.

use super::error::ApiError;
use super::server::Shared;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// The page's own files: served without a token.
pub(super) const PUBLIC: [&str; 3] = ["/", "/app.js", "/app.css"];

/// What the page may load: its own files, its API, and pictures it made from fetched blobs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes and the ones only it needs (`/api/status`, `/api/crops/{file}`), merged into
/// the server's router.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/status", get(status))
        .route("/api/crops/{file}", get(super::crops::get))
}

/// Refuses a write (anything but GET and HEAD) that a browser sends from a page of another site:
/// its `Origin` is not this server's `Host`. A multipart POST needs no CORS preflight, so without
/// this any web page a user of the box opens could enroll photos on a loopback farsight without
/// a token. Clients that send no `Origin` (curl, scripts) are not concerned.
pub(super) fn cross_site_write(request: &Request) -> Option<ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let origin = request.headers().get(header::ORIGIN)?;
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().unwrap_or("?");
    let from = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    if from.is_some() && from == host {
        return None;
    }
    Some(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "a write sent from a page of another site (Origin {}) is refused: use farsight's own page, or a \
             client that sends no Origin header",
            crate::gallery::shorten(origin)
        ),
    ))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate on each load: a new binary brings a new page.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/status`: readiness, per-camera counters (frames in, passed on, dropped, failed; visits
/// by kind), every stage's counters and latency, events by kind and phase, memory.
async fn status(State(state): State<Shared>) -> Json<serde_json::Value> {
    let snaps: Vec<_> = state.cx.live.stages().iter().map(|s| s.snapshot()).collect();
    let per_camera = state.cx.hub.camera_counts();
    let cameras: Vec<serde_json::Value> = snaps
        .iter()
        .filter_map(|s| {
            let name = s.name.strip_prefix("camera-")?;
            let [matches, unknown] = per_camera.get(name).copied().unwrap_or_default();
            Some(serde_json::json!({
                "camera": name, "frames_in": s.input, "frames_out": s.output, "dropped": s.dropped,
                "errors": s.errors, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                "visits": { "match": matches, "unknown": unknown },
            }))
        })
        .collect();
    let stages: Vec<serde_json::Value> = snaps
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.name, "in": s.input, "out": s.output, "dropped": s.dropped, "errors": s.errors,
                "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
            })
        })
        .collect();
    let mut events = serde_json::Map::new();
    for (kind, phase, n) in state.cx.hub.counts() {
        let entry = events.entry(kind).or_insert_with(|| serde_json::json!({}));
        entry[phase] = n.into();
    }
    Json(serde_json::json!({
        "ready": !state.cx.pipeline || state.cx.live.is_ready(),
        "pipeline": state.cx.pipeline,
        "events_stored": state.cx.events_stored,
        "crops": state.cx.crops.is_some(),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "rss_bytes": crate::stats::rss_kib().map(|k| k * 1024),
        "cameras": cameras,
        "stages": stages,
        "events": events,
    }))
}
