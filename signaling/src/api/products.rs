//! A room's product catalog (docs/api.md "Products"): list, add, edit, delete, upload an image;
//! and the uploaded images themselves, public under `/media/products/{id}`.

use super::{ApiResult, authorize, json, ok, read_body};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::commerce::{catalog, catalog_changed};
use crate::live::room::lock;
use crate::protocol::ProductView;
use crate::store::ProductRow;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A product's fields as the API takes them (all optional for an edit).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub title: Option<String>,
    pub price_minor: Option<i64>,
    pub currency: Option<String>,
    pub image_url: Option<String>,
    pub checkout_url: Option<String>,
}

/// A product with this live's counters.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    product: ProductView,
    views: u64,
    clicks: u64,
}

/// Apply `input` to `p`, checking every field given.
#[doc(hidden)] // public for the fuzz target `api_bodies` (fuzz/)
pub fn apply(p: &mut ProductRow, input: ProductInput) -> Result<(), AppError> {
    if let Some(t) = input.title {
        p.title = catalog::title(&t)?;
    }
    if let Some(m) = input.price_minor {
        p.price_minor = catalog::price(m)?;
    }
    if let Some(c) = input.currency {
        p.currency = catalog::currency(&c)?;
    }
    if let Some(u) = input.checkout_url {
        p.checkout_url = catalog::web_url("checkout_url", &u)?;
    }
    if let Some(u) = input.image_url {
        p.image_url = catalog::image_url(&p.id, &u)?;
    }
    Ok(())
}

async fn find(app: &AppState, room: &str, id: &str) -> Result<ProductRow, AppError> {
    app.store.product(room, id).await?.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such product in this room's catalog"))
}

/// `GET /api/v1/rooms/{room}/products`: the catalog with the current live's views and clicks.
pub async fn list(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?;
    let products = app.store.products(&room).await?;
    let live = app.store.open_live_of(&room).await?;
    let stored = match &live {
        Some(l) => app.store.product_stats(l).await?,
        None => Default::default(),
    };
    let running = app.rooms.get(&room);
    let listed: Vec<Listed> = products
        .iter()
        .map(|p| {
            let (mut views, mut clicks) = stored.get(&p.id).copied().unwrap_or_default();
            if let Some(r) = &running {
                let r = lock(r);
                if live.as_deref() == Some(r.chat.live_id.as_str()) {
                    let (v, c) = r.commerce.pending_of(&p.id);
                    views += v;
                    clicks += c;
                }
            }
            Listed { product: catalog::view(p), views, clicks }
        })
        .collect();
    ok(StatusCode::OK, &serde_json::json!({ "products": listed, "live_id": live }))
}

/// `GET /api/v1/rooms/{room}/products/{id}`.
pub async fn get(State(app): State<AppState>, Path((room, id)): Path<(String, String)>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?;
    ok(StatusCode::OK, &catalog::view(&find(&app, &room, &id).await?))
}

/// `POST /api/v1/rooms/{room}/products`.
pub async fn create(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap, body: Body) -> ApiResult {
    authorize(&app, &headers, &room)?;
    let input: ProductInput = json(body).await?;
    for (field, given) in [
        ("title", input.title.is_some()),
        ("price_minor", input.price_minor.is_some()),
        ("currency", input.currency.is_some()),
        ("checkout_url", input.checkout_url.is_some()),
    ] {
        if !given {
            return Err(AppError::new(ErrorCode::BadMessage, format!("{field} is required")).into());
        }
    }
    let mut p = ProductRow {
        id: format!("p{:x}", app.store.next_id()),
        room: room.clone(),
        title: String::new(),
        price_minor: 0,
        currency: String::new(),
        image_url: String::new(),
        checkout_url: String::new(),
    };
    apply(&mut p, input)?;
    app.store.add_product(&p, app.config.commerce.max_products).await?;
    tracing::info!(%room, product = %p.id, "product added");
    catalog_changed(&app, &room, &p.id, Some(catalog::view(&p))).await;
    ok(StatusCode::CREATED, &catalog::view(&p))
}

/// `PATCH /api/v1/rooms/{room}/products/{id}`.
pub async fn update(State(app): State<AppState>, Path((room, id)): Path<(String, String)>, headers: HeaderMap, body: Body) -> ApiResult {
    authorize(&app, &headers, &room)?;
    let input: ProductInput = json(body).await?;
    let mut p = find(&app, &room, &id).await?;
    apply(&mut p, input)?;
    if !app.store.update_product(&p).await? {
        return Err(AppError::new(ErrorCode::NotFound, "no such product in this room's catalog").into());
    }
    catalog_changed(&app, &room, &p.id, Some(catalog::view(&p))).await;
    ok(StatusCode::OK, &catalog::view(&p))
}

/// `DELETE /api/v1/rooms/{room}/products/{id}`: gone from the catalog, unpinned if pinned.
pub async fn delete(State(app): State<AppState>, Path((room, id)): Path<(String, String)>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?;
    if !app.store.delete_product(&room, &id).await? {
        return Err(AppError::new(ErrorCode::NotFound, "no such product in this room's catalog").into());
    }
    catalog_changed(&app, &room, &id, None).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/rooms/{room}/products/{id}/image`: the body is the image (PNG, JPEG, WebP or
/// GIF; its bytes must be what its Content-Type says).
pub async fn upload_image(
    State(app): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&app, &headers, &room)?;
    let mut p = find(&app, &room, &id).await?;
    let declared = declared_type(&headers);
    let max = app.config.commerce.max_image_bytes;
    let bytes = read_body(body, max).await?;
    let sniffed = catalog::sniff_image(&bytes)
        .ok_or_else(|| AppError::new(ErrorCode::BadImage, "the image must be a PNG, JPEG, WebP or GIF file"))?;
    if declared != sniffed {
        return Err(AppError::new(ErrorCode::BadImage, format!("the body is {sniffed}, but Content-Type says {declared:?}")).into());
    }
    let version = app.store.set_product_image(&p.id, sniffed, &bytes).await?;
    p.image_url = format!("/media/products/{}?v={version}", p.id);
    app.store.update_product(&p).await?;
    catalog_changed(&app, &room, &p.id, Some(catalog::view(&p))).await;
    ok(StatusCode::OK, &catalog::view(&p))
}

/// `GET /media/products/{id}`: an uploaded image, cached for good (its URL names its version).
pub async fn image(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.store.product_image(&id).await {
        Ok(Some((content_type, bytes))) => image_response(&content_type, bytes),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => super::ApiError(e).into_response(),
    }
}

/// The media type a request's `Content-Type` declares, lowercase, without parameters.
pub fn declared_type(headers: &HeaderMap) -> String {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// An uploaded image as its own URL serves it: cached for good (the URL names its version),
/// never sniffed or run as anything else.
pub fn image_response(content_type: &str, bytes: Vec<u8>) -> Response {
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    res
}
