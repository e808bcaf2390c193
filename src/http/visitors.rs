//! The visitor routes: `/api/visitors` (list), `/api/visitors/{id}` (one; `DELETE` forgets it),
//! `/api/visitors/{id}/name` (enroll as an identity), `/merge`, `/ignore`, and `/best_shot` (the
//! best kept face's crop, when crops are saved). Ids are `v<digits>` and nothing else, so no id
//! can read as a path; every write is one transaction on the server's own gallery connection and
//! is refused from shutdown on.

use super::api::check_id;
use super::error::ApiError;
use super::server::{blocking, Shared};
use crate::gallery::{Gallery, GalleryError};
use crate::visitors::store::{self, VisitorSummary};
use crate::visitors::{VisitorError, VisitorId};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

impl From<VisitorError> for ApiError {
    fn from(e: VisitorError) -> Self {
        let status = match &e {
            VisitorError::BadId(_) | VisitorError::SameVisitor(_) => StatusCode::BAD_REQUEST,
            VisitorError::Unknown(_) => StatusCode::NOT_FOUND,
            VisitorError::NothingToEnroll(_) => StatusCode::CONFLICT,
            VisitorError::Gallery(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match e {
            VisitorError::Gallery(g) => g.into(),
            other => ApiError::new(status, crate::error_chain(&other)),
        }
    }
}

/// Runs `f` on the server's gallery connection; no gallery yet reads as `missing`.
fn with_visitors<T>(
    state: &Shared,
    missing: impl FnOnce() -> Result<T, VisitorError>,
    f: impl FnOnce(&mut Gallery) -> Result<T, VisitorError>,
) -> Result<T, ApiError> {
    match state.with_gallery(false, |g| Ok(f(g))) {
        Ok(r) => Ok(r?),
        Err(GalleryError::Missing { .. }) => Ok(missing()?),
        Err(e) => Err(e.into()),
    }
}

/// A visitor as the API shows it: the stored summary, with the best shot's URL when crops are on.
fn shown(state: &Shared, v: VisitorSummary) -> serde_json::Value {
    let url = match (&state.cx.crops, &v.best_shot) {
        (Some(_), Some(_)) => Some(format!("/api/visitors/{}/best_shot", v.id)),
        _ => None,
    };
    let mut json = serde_json::to_value(&v).unwrap_or_default();
    if let Some(obj) = json.as_object_mut() {
        obj.remove("best_shot");
        obj.insert("best_shot_url".into(), url.into());
    }
    json
}

fn parse(id: &str) -> Result<VisitorId, ApiError> {
    Ok(VisitorId::parse(id)?)
}

/// `GET /api/visitors`: every visitor, most recently seen first.
pub(super) async fn list(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = state.clone();
    let list = blocking(move || with_visitors(&st, || Ok(Vec::new()), store::list)).await?;
    let visitors: Vec<serde_json::Value> = list.into_iter().map(|v| shown(&state, v)).collect();
    Ok(Json(serde_json::json!({ "visitors": visitors })))
}

/// `GET /api/visitors/{id}`.
pub(super) async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse(&id)?;
    let st = state.clone();
    let v = blocking(move || with_visitors(&st, || Err(VisitorError::Unknown(id)), |g| store::get(g, id))).await?;
    Ok(Json(shown(&state, v)))
}

/// `GET /api/visitors/{id}/best_shot`: the PNG of the visitor's best kept face (crops on only,
/// and only a file inside `crops.dir`).
pub(super) async fn best_shot(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse(&id)?;
    let Some(dir) = state.cx.crops.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "crops are off ([crops] enabled = false): no best shots are kept",
        ));
    };
    let st = state.clone();
    let bytes = blocking(move || {
        let v = with_visitors(&st, || Err(VisitorError::Unknown(id)), |g| store::get(g, id))?;
        let path = v.best_shot.map(std::path::PathBuf::from).filter(|p| store::within(p, &dir)).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("visitor {id} has no best-shot crop in crops.dir (crops saved later will show)"),
            )
        })?;
        std::fs::read(&path)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("visitor {id}'s best shot cannot be read: {e}")))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
}

/// The body of `POST /api/visitors/{id}/name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    name: String,
}

/// `POST /api/visitors/{id}/name` with `{"name": NAME}`: the visitor's kept embeddings become
/// templates of NAME (201: a new identity; 200: added to an existing one) and the visitor is
/// deleted, in one transaction.
pub(super) async fn name(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = parse(&id)?;
    let Json(NameBody { name }) = body.map_err(|e| {
        ApiError::bad_request(format!("{}: send the JSON object {{\"name\": \"NAME\"}}", e.body_text()))
    })?;
    check_id(&name)?;
    let st = state.clone();
    let named = blocking(move || {
        st.still_writable()?;
        let embedder = st.cx.recognizer.embedder().id().clone();
        with_visitors(&st, || Err(VisitorError::Unknown(id)), |g| store::name(g, id, &name, &embedder))
    })
    .await?;
    let status = if named.created { StatusCode::CREATED } else { StatusCode::OK };
    let body = serde_json::json!({
        "visitor": id.to_string(), "name": named.name, "created": named.created, "templates": named.templates,
    });
    Ok((status, Json(body)).into_response())
}

/// The body of `POST /api/visitors/{id}/merge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MergeBody {
    into: String,
}

/// `POST /api/visitors/{id}/merge` with `{"into": ID}`: `into` absorbs the visitor.
pub(super) async fn merge(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<MergeBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from = parse(&id)?;
    let Json(MergeBody { into }) = body.map_err(|e| {
        ApiError::bad_request(format!("{}: send the JSON object {{\"into\": \"v<number>\"}}", e.body_text()))
    })?;
    let into = parse(&into)?;
    let st = state.clone();
    let merged = blocking(move || {
        st.still_writable()?;
        with_visitors(&st, || Err(VisitorError::Unknown(from)), |g| store::merge(g, from, into))
    })
    .await?;
    Ok(Json(serde_json::json!({ "merged": from.to_string(), "into": shown(&state, merged) })))
}

/// The optional body of `POST /api/visitors/{id}/ignore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreBody {
    ignored: bool,
}

/// `POST /api/visitors/{id}/ignore` (no body, or `{"ignored": false}` to stop ignoring): an
/// ignored visitor's events are suppressed (counted, not sent).
pub(super) async fn ignore(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse(&id)?;
    let ignored = if body.iter().all(u8::is_ascii_whitespace) {
        true
    } else {
        serde_json::from_slice::<IgnoreBody>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{e}: send no body to ignore the visitor, or {{\"ignored\": false}} to stop ignoring it"
                ))
            })?
            .ignored
    };
    let st = state.clone();
    let v = blocking(move || {
        st.still_writable()?;
        with_visitors(&st, || Err(VisitorError::Unknown(id)), |g| store::set_ignored(g, id, ignored))
    })
    .await?;
    Ok(Json(shown(&state, v)))
}

/// `DELETE /api/visitors/{id}`: forgets the visitor, its stored events and the crops of it.
pub(super) async fn forget(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse(&id)?;
    let st = state.clone();
    let gone = blocking(move || {
        st.still_writable()?;
        with_visitors(&st, || Err(VisitorError::Unknown(id)), |g| store::forget(g, id))
    })
    .await?;
    Ok(Json(serde_json::json!({ "forgotten": gone.id, "events": gone.events, "crops": gone.crops })))
}
