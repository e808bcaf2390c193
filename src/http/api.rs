//! The gallery and recognition routes: `/api/identities` (list, add photos, rename, delete) and
//! `/api/identify`. Photos arrive as multipart parts named `photo`; each is decoded within
//! `[images] max_pixels` (a decompression bomb is refused from its header), and enrolling is all
//! or nothing exactly as `farsight enroll`: one photo without a face, with several faces or that
//! cannot be read refuses the whole request, naming the photo, and nothing is written.

use super::crops;
use super::error::ApiError;
use super::server::{blocking, too_large, Shared};
use crate::gallery::{check_name, GalleryError, NewTemplate};
use crate::recognize::to_event;
use crate::source::images;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Checks an identity name taken from a URL: the gallery's rules ([`check_name`]), and no path
/// separator or dot segment (a name in a URL must not read as a path).
pub(super) fn check_id(name: &str) -> Result<(), ApiError> {
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(ApiError::bad_request(format!(
            "identity name {} is refused: names given to the HTTP API cannot hold / or \\ or be . or ..",
            crate::gallery::shorten(name)
        )));
    }
    check_name(name).map_err(ApiError::from)
}

/// One uploaded photo: the name to call it in messages, and its bytes.
struct Photo {
    label: String,
    bytes: axum::body::Bytes,
}

/// An uploaded file's name as messages show it: at most 100 characters, control characters as
/// `?` (the client chooses it; it is never used as a path).
fn label_of(file_name: &str) -> String {
    file_name.chars().take(100).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn multipart_error(e: MultipartError, max_body: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(max_body);
    }
    ApiError::bad_request(format!("the multipart body cannot be read ({}): send multipart/form-data", e.body_text()))
}

/// Reads every `photo` part; any other part, or none at all, is refused.
async fn read_photos(multipart: Result<Multipart, MultipartRejection>, max_body: u64) -> Result<Vec<Photo>, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{}: send the photos as multipart/form-data parts named \"photo\"", e.body_text()),
        )
    })?;
    let mut photos = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, max_body))? {
        let part = field.name().unwrap_or_default().to_owned();
        if part != "photo" {
            return Err(ApiError::bad_request(format!(
                "unexpected form part {}: send each image as a part named \"photo\"",
                crate::gallery::shorten(&part)
            )));
        }
        let label = match field.file_name().filter(|n| !n.is_empty()) {
            Some(name) => label_of(name),
            None => format!("photo {}", photos.len() + 1),
        };
        let bytes = field.bytes().await.map_err(|e| multipart_error(e, max_body))?;
        photos.push(Photo { label, bytes });
    }
    if photos.is_empty() {
        return Err(ApiError::bad_request("no photo: send the image as a multipart/form-data part named \"photo\""));
    }
    Ok(photos)
}

/// `GET /api/identities`: every identity with its template count, by name, and its `thumbnail`
/// URL when crops are on and it was enrolled through the API.
pub(super) async fn list_identities(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let state_crops = state.cx.crops.clone();
    let list = blocking(move || match state.with_gallery(false, |g| g.list()) {
        Ok(list) => Ok(list),
        Err(GalleryError::Missing { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    })
    .await?;
    let crops = state_crops.as_deref();
    let identities: Vec<serde_json::Value> = list
        .iter()
        .map(|i| {
            let mut entry = serde_json::json!({ "name": i.name, "templates": i.templates });
            if let Some(url) = crops::thumbnail_url(crops, &i.name) {
                entry["thumbnail"] = url.into();
            }
            entry
        })
        .collect();
    Ok(Json(serde_json::json!({ "identities": identities })))
}

/// The query string of `POST /api/identities/{name}/photos`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrollParams {
    /// Use the largest of several faces instead of refusing the photo (`enroll --largest`).
    #[serde(default)]
    largest: bool,
}

/// `POST /api/identities/{name}/photos[?largest=true]`: enrolls every `photo` part as templates
/// of `name` (created if new), all or nothing. 201 for a new identity, 200 for more photos of one.
pub(super) async fn add_photos(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Result<Query<EnrollParams>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let Query(EnrollParams { largest }) =
        params.map_err(|e| ApiError::bad_request(format!("{}: the one parameter is largest=true", e.body_text())))?;
    check_id(&name)?;
    let photos = read_photos(multipart, state.cx.http.max_body_bytes).await?;
    let permit = state.recognition.clone().acquire_owned().await.map_err(|_| ApiError::shutting_down())?;
    let st = state.clone();
    let enrolled = blocking(move || {
        let _permit = permit;
        let rec = &st.cx.recognizer;
        let mut templates = Vec::new();
        let mut faces = Vec::new();
        let mut rejected = Vec::new();
        let mut first = None;
        for photo in &photos {
            let img = match images::decode(&photo.bytes, std::path::Path::new(&photo.label), &st.cx.images) {
                Ok(img) => img,
                Err(e) => {
                    rejected.push(e.to_string());
                    continue;
                }
            };
            match rec.single_face(&img, largest) {
                Ok(Ok(obs)) => {
                    let r = obs.face.rect;
                    if first.is_none() && st.cx.crops.is_some() {
                        first = Some((img, r));
                    }
                    faces.push(serde_json::json!({
                        "photo": photo.label, "box": r, "face_px": r.w, "detector_score": obs.face.score,
                    }));
                    templates.push(NewTemplate {
                        vector: obs.embedding,
                        source: format!("http upload {} [{:.0},{:.0},{:.0},{:.0}]", photo.label, r.x, r.y, r.w, r.h),
                        face_px: obs.aligned_px,
                    });
                }
                Ok(Err(0)) => rejected.push(format!("{}: no face found", photo.label)),
                Ok(Err(n)) => rejected.push(format!(
                    "{}: {n} faces found; send a photo that shows only the person to enroll (or add \
                     ?largest=true to use the largest face)",
                    photo.label
                )),
                Err(e) => return Err(ApiError::internal(format!("{}: {}", photo.label, crate::error_chain(&e)))),
            }
        }
        if !rejected.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing enrolled; fix or leave out these photos: {}", rejected.join("; ")),
            ));
        }
        st.still_writable()?;
        let id = rec.embedder().id().clone();
        let created = st.with_gallery(true, |g| g.enroll(&name, &id, &templates))?;
        if let (Some(dir), Some((img, rect))) = (st.cx.crops.as_deref(), first) {
            if created || crops::thumbnail_url(Some(dir), &name).is_none() {
                crops::save_thumbnail(dir, &name, &img, rect);
            }
        }
        Ok((created, faces))
    })
    .await;
    let (created, faces) = enrolled?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let body = serde_json::json!({ "created": created, "added": faces.len(), "faces": faces });
    Ok((status, Json(body)).into_response())
}

/// The body of `PATCH /api/identities/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rename {
    name: String,
}

/// `PATCH /api/identities/{name}` with `{"name": NEW}`: renames an identity.
pub(super) async fn rename_identity(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Json<Rename>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(Rename { name: to }) = body.map_err(|e| {
        ApiError::bad_request(format!("{}: send the JSON object {{\"name\": \"NEW NAME\"}}", e.body_text()))
    })?;
    check_id(&name)?;
    check_id(&to)?;
    let (from, new) = (name.clone(), to.clone());
    blocking(move || {
        state.still_writable()?;
        state.with_gallery(false, |g| g.rename(&from, &new)).map_err(|e| missing_is_unknown(e, &from))?;
        if let Some(dir) = state.cx.crops.as_deref() {
            crops::rename_thumbnail(dir, &from, &new);
        }
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({ "name": to, "renamed_from": name })))
}

/// `DELETE /api/identities/{name}`: removes an identity and all its templates.
pub(super) async fn delete_identity(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&name)?;
    let who = name.clone();
    blocking(move || {
        state.still_writable()?;
        state.with_gallery(false, |g| g.remove(&who)).map_err(|e| missing_is_unknown(e, &who))?;
        if let Some(dir) = state.cx.crops.as_deref() {
            crops::remove_thumbnail(dir, &who);
        }
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

/// No gallery yet means no such identity.
fn missing_is_unknown(e: GalleryError, name: &str) -> ApiError {
    match e {
        GalleryError::Missing { .. } => GalleryError::UnknownIdentity(name.to_owned()).into(),
        other => other.into(),
    }
}

/// `POST /api/identify` with one `photo` part: every face found, with its box, size, whether it
/// was restored (and by what), and its best gallery candidates (`match.top_k`).
pub(super) async fn identify(
    State(state): State<Shared>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut photos = read_photos(multipart, state.cx.http.max_body_bytes).await?;
    if photos.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "{} photos sent: /api/identify takes one part named \"photo\"",
            photos.len()
        )));
    }
    let photo = photos.remove(0);
    let permit = state.recognition.clone().acquire_owned().await.map_err(|_| ApiError::shutting_down())?;
    let st = state.clone();
    let result = blocking(move || {
        let _permit = permit;
        let img = images::decode(&photo.bytes, std::path::Path::new(&photo.label), &st.cx.images)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let observations = st
            .cx
            .recognizer
            .observe(&img)
            .map_err(|e| ApiError::internal(format!("{}: {}", photo.label, crate::error_chain(&e))))?;
        let snapshot = st.snapshot()?;
        let faces: Vec<serde_json::Value> = observations
            .iter()
            .map(|obs| {
                let e = to_event(obs, &snapshot, st.cx.threshold, st.cx.top_k, &photo.label, 0);
                serde_json::json!({
                    "box": e.rect, "face_px": e.face_px, "aligned_px": e.aligned_px,
                    "restored": e.restored, "restorer": e.restorer, "detector_score": e.detector_score,
                    "identity": e.identity, "matched": e.matched, "score": e.score, "candidates": e.candidates,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "photo": photo.label, "width": img.width(), "height": img.height(), "faces": faces,
        }))
    })
    .await;
    Ok(Json(result?))
}
