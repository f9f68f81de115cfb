//! The archive (docs/api.md "Archive"): list, read and delete recorded lives, and download
//! their files (signed links, HTTP ranges).

use super::{ApiResult, authorize, authorize_server, bearer, ok};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::store::ArchiveRow;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Entries one list returns at most.
const LIST_LIMIT: i64 = 200;

async fn views(app: &AppState, rows: Vec<ArchiveRow>) -> Result<Vec<serde_json::Value>, AppError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let files = app.store.archive_files(&row.id).await?;
        out.push(app.archive.view(&row, &files));
    }
    Ok(out)
}

/// `GET /api/v1/rooms/{room}/archive`: the room's entries, newest first (the API key, the
/// host, moderators).
pub async fn list_room(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?;
    let rows = app.store.archives(Some(&room), LIST_LIMIT).await?;
    ok(StatusCode::OK, &serde_json::json!({ "entries": views(&app, rows).await? }))
}

/// `GET /api/v1/archive`: every room's entries (the API key).
pub async fn list_all(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize_server(&app, &headers, "lists every room's archive")?;
    let rows = app.store.archives(None, LIST_LIMIT).await?;
    ok(StatusCode::OK, &serde_json::json!({ "entries": views(&app, rows).await? }))
}

/// The entry, once the caller is known to be the API key or staff of its room. An unknown id
/// is 404 only for a caller with a valid credential.
async fn entry(app: &AppState, headers: &HeaderMap, id: &str) -> Result<(ArchiveRow, super::Caller), AppError> {
    let token = bearer(headers)?;
    let Some(row) = app.store.archive(id).await? else {
        let key = app.config.api.key.as_bytes();
        if key.is_empty() || !bool::from(token.as_bytes().ct_eq(key)) {
            app.auth.verify(token, None)?;
        }
        return Err(AppError::new(ErrorCode::NotFound, "no such archive entry"));
    };
    let caller = authorize(app, headers, &row.room)?;
    Ok((row, caller))
}

/// `GET /api/v1/archive/{id}`.
pub async fn get(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let (row, _) = entry(&app, &headers, &id).await?;
    let files = app.store.archive_files(&row.id).await?;
    ok(StatusCode::OK, &app.archive.view(&row, &files))
}

/// `DELETE /api/v1/archive/{id}`: the entry and its files (the API key or the room's host);
/// not while it is still being recorded or built.
pub async fn delete(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let (row, caller) = entry(&app, &headers, &id).await?;
    caller.require_host("delete archive entries")?;
    if row.state == "recording" || row.state == "processing" {
        return Err(AppError::new(ErrorCode::Conflict, format!("the entry is {}: delete it once it is done", row.state)).into());
    }
    app.archive.delete(&app, &row.id).await?;
    tracing::info!(archive = %row.id, room = %row.room, "archive entry deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct FileQuery {
    exp: Option<u64>,
    sig: Option<String>,
    download: Option<String>,
}

/// `GET /api/v1/archive/{id}/files/{name}`: one file, by a signed link or with a credential;
/// ranges (`206`), `HEAD`, and `download=1` for `Content-Disposition: attachment`.
pub async fn file(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
    req: Request<Body>,
) -> ApiResult {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.')
    {
        return Err(AppError::new(ErrorCode::NotFound, "no such file").into());
    }
    match (q.exp, q.sig.as_deref()) {
        (Some(exp), Some(sig)) => {
            if !app.archive.links.verify(&id, &name, exp, sig) {
                return Err(AppError::new(ErrorCode::NotAllowed, "the link is not valid, or has expired: ask for the entry again").into());
            }
        }
        _ => {
            entry(&app, &headers, &id).await?;
        }
    }
    // Only files the entry lists: the stage video and its raw files.
    let Some(row) = app.store.archive(&id).await? else {
        return Err(AppError::new(ErrorCode::NotFound, "no such archive entry").into());
    };
    let listed = row.video_name.as_deref() == Some(name.as_str())
        || app.store.archive_files(&id).await?.iter().any(|f| f.name == name && f.bytes > 0);
    if !listed {
        return Err(AppError::new(ErrorCode::NotFound, "no such file in this entry").into());
    }
    let path = app.archive.entry_dir(&id).join(&name);
    if !path.is_file() {
        return Err(AppError::new(ErrorCode::NotFound, "the file is gone").into());
    }
    let mp4: mime::Mime = "video/mp4".parse().map_err(|e| AppError::internal("mime", e))?;
    let mut res = ServeFile::new_with_mime(&path, &mp4)
        .oneshot(req)
        .await
        .map_err(|e| AppError::internal("could not read the file", e))?
        .map(Body::new);
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if q.download.as_deref() == Some("1")
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}-{name}\"", row.room.replace(['"', '\\'], "")))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
