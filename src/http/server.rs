//! The server itself: a tokio runtime of its own (two worker threads and at most two blocking
//! threads, all at a lower CPU priority than the pipeline), the router, and the guard every
//! request passes (access token, shutdown, time limit). Recognition for uploads runs one request
//! at a time on the blocking threads; the gallery and the events table are read and written
//! through connections of the server's own, so the pipeline never waits on a request.

use super::error::{ApiError, HttpError};
use super::events::Hub;
use super::{api, events, metrics, page, visitors, HttpConfig};
use crate::gallery::{Gallery, GalleryError, OpenMode, Snapshot};
use crate::recognize::Recognizer;
use crate::source::images::ImageLimits;
use crate::stats::LiveState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the server serves from, built by the command that starts it.
pub struct ServerContext {
    pub http: HttpConfig,
    /// Decode limits for uploaded photos (`[images]`).
    pub images: ImageLimits,
    /// The gallery database (identities, templates and, with the SQLite sink, events).
    pub gallery: PathBuf,
    /// `match.threshold` and `match.top_k` for `/api/identify`.
    pub threshold: f32,
    pub top_k: usize,
    /// Whether events are stored in the gallery's events table (`[sinks.sqlite]` is configured).
    pub events_stored: bool,
    /// `crops.dir` when `[crops]` is enabled: best shots, visitors' best shots and identity
    /// thumbnails are served from it only.
    pub crops: Option<PathBuf>,
    pub recognizer: Arc<Recognizer>,
    /// New events for `/api/events/stream` and their counts for `/metrics`.
    pub hub: Arc<Hub>,
    /// The pipeline's readiness and stage counters.
    pub live: Arc<LiveState>,
    /// Whether a camera pipeline runs beside the server (`run`) or not (`serve`).
    pub pipeline: bool,
    /// Set when the daemon is stopping: from then on, every request that would write is refused.
    pub stop: Arc<AtomicBool>,
}

/// The state every handler shares.
pub(super) struct AppState {
    pub cx: ServerContext,
    pub started: Instant,
    /// The server's own gallery connection, opened on first use.
    pub gallery: Mutex<Option<Gallery>>,
    /// The last snapshot `/api/identify` matched against, with the gallery generation it is of.
    pub snapshot: Mutex<Option<(i64, Arc<Snapshot>)>>,
    /// One recognition (enroll or identify) at a time: the others wait, within the time limit.
    /// The permit moves into the blocking work, so a request that timed out still holds it
    /// until its work ends.
    pub recognition: Arc<tokio::sync::Semaphore>,
    /// The server's own read-only connection to the events table, opened on first use.
    pub events_db: Mutex<Option<rusqlite::Connection>>,
}

pub(super) type Shared = Arc<AppState>;

impl AppState {
    /// Runs `f` on the server's gallery connection (opened on first use; created when `create`,
    /// else a missing gallery is [`GalleryError::Missing`]). Call from a blocking thread.
    pub fn with_gallery<T>(
        &self,
        create: bool,
        f: impl FnOnce(&mut Gallery) -> Result<T, GalleryError>,
    ) -> Result<T, GalleryError> {
        let mut slot = self.gallery.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let mode = if create { OpenMode::CreateIfMissing } else { OpenMode::MustExist };
            *slot = Some(Gallery::open(&self.cx.gallery, mode, Some(self.cx.recognizer.embedder().id()))?);
        }
        match slot.as_mut() {
            Some(g) => f(g),
            None => Err(GalleryError::Missing { path: self.cx.gallery.clone() }),
        }
    }

    /// The gallery as matching sees it now (empty when there is no gallery yet).
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, GalleryError> {
        let current = self.with_gallery(false, |g| {
            let generation = g.generation()?;
            let mut cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            match cached.as_ref() {
                Some((at, snap)) if *at == generation => Ok(snap.clone()),
                _ => {
                    let snap = Arc::new(g.snapshot()?);
                    *cached = Some((generation, snap.clone()));
                    Ok(snap)
                }
            }
        });
        match current {
            Err(GalleryError::Missing { .. }) => Ok(Arc::default()),
            other => other,
        }
    }

    pub fn stopping(&self) -> bool {
        self.cx.stop.load(Ordering::Relaxed)
    }

    /// `Err(503)` once the daemon is stopping. A write checks it again on its blocking thread,
    /// just before writing: the request guard let it in, but it may have waited since.
    pub fn still_writable(&self) -> Result<(), ApiError> {
        if self.stopping() {
            Err(ApiError::shutting_down())
        } else {
            Ok(())
        }
    }
}

/// Runs blocking work (models, SQLite) on the runtime's blocking threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

/// A running server. [`Server::shutdown`] stops it; dropping it stops it at once.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    hub: Arc<Hub>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

/// Worker threads of the server's runtime (requests, SSE streams) and blocking threads (models,
/// SQLite): few, so the pipeline keeps the cores.
const WORKER_THREADS: usize = 2;
const BLOCKING_THREADS: usize = 2;

impl Server {
    /// Binds `cx.http.bind` and starts serving on threads of its own. A port that is taken is an
    /// error here, at start.
    pub fn start(cx: ServerContext) -> Result<Self, HttpError> {
        let addr = cx.http.addr().ok_or_else(|| HttpError::BadAddress { bind: cx.http.bind.clone() })?;
        let listener = std::net::TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("http")
            .on_thread_start(lower_priority)
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpError::Runtime)?;
        let hub = cx.hub.clone();
        let state = Arc::new(AppState {
            cx,
            started: Instant::now(),
            gallery: Mutex::new(None),
            snapshot: Mutex::new(None),
            recognition: Arc::new(tokio::sync::Semaphore::new(1)),
            events_db: Mutex::new(None),
        });
        let app = router(state.clone());
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|source| HttpError::Bind { addr, source })?
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stop_rx.await;
            });
            if let Err(e) = served.await {
                log::error!("http: the server stopped: {e}");
            }
        });
        if !state.cx.pipeline && state.cx.events_stored {
            runtime.spawn(events::tail_table(state));
        }
        log::info!("http: listening on http://{addr}");
        Ok(Self { runtime: Some(runtime), addr, hub, stop_tx: Some(stop_tx), task: Some(task) })
    }

    /// The address the server listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, ends the event streams, and waits up to `grace` for requests
    /// in progress to be answered.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        self.hub.close();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let (Some(runtime), Some(task)) = (self.runtime.as_ref(), self.task.take()) {
            if runtime.block_on(async { tokio::time::timeout(grace, task).await }).is_err() {
                log::warn!("http: requests still running after {grace:?}; abandoned");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Runs the server's threads at a lower priority (nice +10) than the pipeline's: a burst of
/// requests must not slow capture and recognition.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread (Linux: PRIO_PROCESS with who = 0 is this thread);
    // no memory is involved. A failure leaves the priority as it was.
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (current + 10).min(19));
    }
}

fn router(state: Shared) -> Router {
    let body_limit = usize::try_from(state.cx.http.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/identities", get(api::list_identities))
        .route("/api/identities/{name}", patch(api::rename_identity).delete(api::delete_identity))
        .route("/api/identities/{name}/photos", post(api::add_photos))
        .route("/api/identify", post(api::identify))
        .route("/api/events", get(events::list))
        .route("/api/events/stream", get(events::stream))
        .route("/api/visitors", get(visitors::list))
        .route("/api/visitors/{id}", get(visitors::get).delete(visitors::forget))
        .route("/api/visitors/{id}/best_shot", get(visitors::best_shot))
        .route("/api/visitors/{id}/name", post(visitors::name))
        .route("/api/visitors/{id}/merge", post(visitors::merge))
        .route("/api/visitors/{id}/ignore", post(visitors::ignore))
        .merge(page::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// What every request passes first: the access token (when one is configured; `/healthz` and
/// the page's own files excepted), a write sent from another site's page, a body the size limit
/// refuses from its `Content-Length`, the shutdown (anything but a read is refused), and the time
/// limit.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let http = &state.cx.http;
    if let Some(token) = &http.token {
        let path = request.uri().path();
        if path != "/healthz" && !page::PUBLIC.contains(&path) && !authorized(&request, token) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong access token: send the header `Authorization: Bearer <http.token>`",
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if let Some(refused) = page::cross_site_write(&request) {
        return refused.into_response();
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > http.max_body_bytes) {
        return too_large(http.max_body_bytes).into_response();
    }
    if state.stopping() && request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::shutting_down().into_response();
    }
    let limit = Duration::from_secs_f32(http.request_timeout_s);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within http.request_timeout_s = {} s (the box is busy, or the upload too slow); \
                 an enroll already under way may still complete: check GET /api/identities before retrying",
                http.request_timeout_s
            ),
        )
        .into_response(),
    }
}

/// 413 for a body over `http.max_body_bytes`.
pub(super) fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than http.max_body_bytes = {max} bytes: send smaller or fewer photos"),
    )
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn authorized(request: &Request, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}: see the README's HTTP API section", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}: see the README's HTTP API section", request.method(), request.uri().path()),
    )
}

/// `GET /healthz`: the server answers.
async fn healthz(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "uptime_s": state.started.elapsed().as_secs_f64() }))
}

/// `GET /readyz`: 200 once the models are loaded and (with cameras) every camera has delivered a
/// frame or the grace period passed, as systemd's READY; 503 before, and while stopping.
async fn readyz(State(state): State<Shared>) -> Response {
    let cameras: Vec<serde_json::Value> = state
        .cx
        .live
        .stages()
        .iter()
        .filter_map(|s| {
            let name = s.name().strip_prefix("camera-")?;
            Some(serde_json::json!({ "camera": name, "frames": s.snapshot().input }))
        })
        .collect();
    let ready = !state.cx.pipeline || state.cx.live.is_ready();
    if state.stopping() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "farsight is shutting down").into_response();
    }
    if !ready {
        let missing: Vec<&str> =
            cameras.iter().filter(|c| c["frames"] == 0).filter_map(|c| c["camera"].as_str()).collect();
        let message = if missing.is_empty() {
            "not ready yet: the pipeline is starting".to_owned()
        } else {
            format!("not ready yet: no frame so far from camera {}", missing.join(", "))
        };
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    Json(serde_json::json!({ "ready": true, "models": true, "cameras": cameras })).into_response()
}
