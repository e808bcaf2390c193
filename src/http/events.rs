//! Events for HTTP clients: `GET /api/events` reads the SQLite sink's `events` table (through the
//! server's own read-only connection), `GET /api/events/stream` sends new events as Server-Sent
//! Events. New events reach the stream through the [`Hub`]: `farsight run` publishes each event
//! there as it hands it to the sinks; `farsight serve` tails the events table (another process's
//! `run` writes it).

use super::error::ApiError;
use super::server::{blocking, Shared};
use crate::event::{Phase, TrackDecision, TrackEvent};
use crate::sink::sqlite::{self, EventQuery};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Events buffered for slow stream clients; one that falls further behind is told how many it
/// missed (an SSE `lagged` event) and goes on with the newest.
const STREAM_BUFFER: usize = 256;

/// Where new events meet the HTTP server: the SSE stream's broadcast (bounded, never blocks the
/// publisher) and the per-kind counts `/metrics` shows.
#[derive(Debug)]
pub struct Hub {
    tx: Mutex<Option<broadcast::Sender<Arc<str>>>>,
    /// Events by decision (match, unknown) and phase (decision, update, final).
    counts: [[AtomicU64; 3]; 2],
    /// Visits (final events) by camera and decision, for `/api/status`.
    cameras: Mutex<BTreeMap<String, [u64; 2]>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: Mutex::new(Some(broadcast::channel(STREAM_BUFFER).0)),
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            cameras: Mutex::default(),
        }
    }
}

/// The label values of [`Hub::counts`], in index order.
pub(super) const KINDS: [&str; 2] = ["match", "unknown"];
pub(super) const PHASES: [&str; 3] = ["decision", "update", "final"];

impl Hub {
    /// Counts `event` and hands it to every stream client. Never blocks; cheap without clients.
    pub fn publish(&self, event: &TrackEvent) {
        let kind = match event.event {
            TrackDecision::Match => 0,
            TrackDecision::Unknown => 1,
        };
        let phase = match event.phase {
            Phase::Decision => 0,
            Phase::Update => 1,
            Phase::Final => 2,
        };
        self.counts[kind][phase].fetch_add(1, Relaxed);
        if event.phase == Phase::Final {
            let mut cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
            match cameras.get_mut(&event.camera) {
                Some(counts) => counts[kind] += 1,
                None => {
                    let mut counts = [0; 2];
                    counts[kind] = 1;
                    cameras.insert(event.camera.clone(), counts);
                }
            }
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
            match serde_json::to_string(event) {
                Ok(json) => drop(tx.send(json.into())),
                Err(e) => log::warn!("http: cannot encode an event for the stream: {e}"),
            }
        }
    }

    /// Hands an event already in JSON to every stream client (not counted: `serve` relays events
    /// another process counted).
    fn relay(&self, json: String) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            drop(tx.send(json.into()));
        }
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|tx| tx.subscribe())
    }

    /// Visits (final events) counted so far by camera: `[match, unknown]`.
    pub(super) fn camera_counts(&self) -> BTreeMap<String, [u64; 2]> {
        self.cameras.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Events counted so far by decision and phase, with the label values.
    pub(super) fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (k, kind) in KINDS.iter().enumerate() {
            for (p, phase) in PHASES.iter().enumerate() {
                out.push((*kind, *phase, self.counts[k][p].load(Relaxed)));
            }
        }
        out
    }
}

/// The query string of `GET /api/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    camera: Option<String>,
    identity: Option<String>,
    kind: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<u32>,
    offset: Option<u64>,
}

/// The most events one page may hold.
pub const MAX_PAGE: u32 = 1000;

fn not_stored() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "events are not stored: add a [sinks.sqlite] section to the config so events are kept in the gallery \
         database",
    )
}

/// `GET /api/events?camera=&identity=&kind=&since=&until=&limit=&offset=`: stored events, newest
/// first (`since`/`until`: Unix milliseconds of the visit's last sighting; `limit` 1-1000,
/// default 100).
pub(super) async fn list(
    State(state): State<Shared>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.cx.events_stored {
        return Err(not_stored());
    }
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}: the parameters are camera, identity, kind (match or unknown), since and until (Unix \
             milliseconds), limit (1-{MAX_PAGE}) and offset",
            e.body_text()
        ))
    })?;
    if let Some(kind) = p.kind.as_deref().filter(|k| !KINDS.contains(k)) {
        return Err(ApiError::bad_request(format!("kind = {kind:?}: must be \"match\" or \"unknown\"")));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit = {limit}: must be between 1 and {MAX_PAGE}")));
    }
    let q = EventQuery {
        camera: p.camera,
        identity: p.identity,
        kind: p.kind,
        since_ms: p.since,
        until_ms: p.until,
        limit,
        offset: p.offset.unwrap_or(0),
    };
    let offset = q.offset;
    let crops = state.cx.crops.is_some();
    let rows = blocking(move || {
        let mut slot = state.events_db.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            if !state.cx.gallery.exists() {
                return Ok(Vec::new());
            }
            *slot = Some(open_read_only(&state.cx.gallery)?);
        }
        let Some(conn) = slot.as_ref() else { return Ok(Vec::new()) };
        sqlite::query(conn, &q).map_err(|e| events_error(&state.cx.gallery, e))
    })
    .await?;
    let events: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(_, mut e)| {
            if crops {
                super::crops::add_crop_url(&mut e);
            }
            e
        })
        .collect();
    Ok(Json(serde_json::json!({ "events": events, "limit": limit, "offset": offset })))
}

fn events_error(path: &std::path::Path, e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("reading the events in {}: {e}", path.display()))
}

/// A read-only connection to the gallery database (WAL: readers never block the sink).
fn open_read_only(path: &std::path::Path) -> Result<rusqlite::Connection, ApiError> {
    use rusqlite::OpenFlags;
    let conn =
        rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| events_error(path, e))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| events_error(path, e))?;
    Ok(conn)
}

/// `GET /api/events/stream`: every new event as an SSE `event` message whose data is the event's
/// JSON (the same object the sinks receive); `lagged` with the number missed when the client fell
/// behind; a comment every 15 s keeps idle connections open. Ends when the server stops.
pub(super) async fn stream(
    State(state): State<Shared>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let rx = state.cx.hub.subscribe().ok_or_else(ApiError::shutting_down)?;
    let crops = state.cx.crops.is_some();
    let events = futures_util::stream::unfold(rx, move |mut rx| async move {
        let event = match rx.recv().await {
            Ok(json) if crops && json.contains("\"crop\":\"") => {
                Event::default().event("event").data(with_crop_url(&json).as_deref().unwrap_or(&*json))
            }
            Ok(json) => Event::default().event("event").data(&*json),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `json` with `best_shot.crop_url` added (None when it does not parse).
fn with_crop_url(json: &str) -> Option<String> {
    let mut event: serde_json::Value = serde_json::from_str(json).ok()?;
    super::crops::add_crop_url(&mut event);
    serde_json::to_string(&event).ok()
}

/// How often `farsight serve` looks for new rows in the events table.
const TAIL_EVERY: Duration = Duration::from_millis(500);

/// For `farsight serve`: relays events another process stores in the gallery's events table to
/// the stream, from the newest row at start on. Runs on the server's runtime until the hub closes.
pub(super) async fn tail_table(state: Shared) {
    let mut last: Option<i64> = None;
    loop {
        tokio::time::sleep(TAIL_EVERY).await;
        if state.cx.hub.subscribe().is_none() {
            return;
        }
        let st = state.clone();
        let after = last;
        let fresh = blocking(move || {
            if !st.cx.gallery.exists() {
                return Ok(None);
            }
            let mut slot = st.events_db.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(open_read_only(&st.cx.gallery)?);
            }
            let Some(conn) = slot.as_ref() else { return Ok(None) };
            let rows = match after {
                Some(id) => sqlite::newer_than(conn, id, 100),
                // Start after the newest row: the stream carries new events only.
                None => conn
                    .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get::<_, i64>(0))
                    .map(|max| vec![(max, String::new())]),
            };
            rows.map(Some).map_err(|e| events_error(&st.cx.gallery, e))
        })
        .await;
        match fresh {
            Ok(Some(rows)) => {
                for (id, json) in rows {
                    if after.is_some() {
                        state.cx.hub.relay(json);
                    }
                    last = Some(id);
                }
            }
            Ok(None) => {}
            Err(e) => log::debug!("http: tailing the events table: {}", e.message),
        }
    }
}
