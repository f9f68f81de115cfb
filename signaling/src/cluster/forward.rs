//! Routes that act on a live, on a cluster: the server API's `/api/v1/rooms/{room}/…`, and WHIP
//! and WHEP (`/whip/{room}…`, `/whep/{room}…`: an encoder or a player posts its offer, then
//! patches and deletes its session). The live runs on one node, so a call that reaches another
//! node is forwarded there and the answer relayed (the caller's credential goes along: the live's
//! node checks it as for any call). A WHIP or WHEP client thus needs to follow no redirect, and a
//! browser's token is not dropped by a cross-origin redirect; its media goes straight to the
//! live's node (the answer's candidate is that node's). A call for a
//! room no node holds is answered here (the store is shared). `X-Onair-Forwarded` marks a
//! forwarded call: its node answers it itself, whatever it thinks of the placement (no loops).

use super::Cluster;
use crate::api::ApiError;
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Set on a forwarded call, to the forwarding node's id.
pub const FORWARDED: &str = "x-onair-forwarded";

/// The room of a path that acts on a live, if it is one: `/api/v1/rooms/{room}/…` (the API's
/// room routes), `/whip/{room}[/{session}]` and `/whep/{room}[/{session}]` (percent-decoded).
pub fn room_of(path: &str) -> Option<String> {
    let room = if let Some(rest) = path.strip_prefix("/api/v1/rooms/") {
        // A room route has a tail (`/end`, `/products`…); `/api/v1/rooms` itself lists this node's.
        rest.split_once('/').filter(|(_, tail)| !tail.is_empty())?.0
    } else {
        path.strip_prefix("/whip/").or_else(|| path.strip_prefix("/whep/"))?.split('/').next()?
    };
    if room.is_empty() {
        return None;
    }
    percent_encoding::percent_decode_str(room).decode_utf8().ok().map(|r| r.into_owned())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the client library sets itself.
fn carried(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "content-length"
    )
}

/// Middleware on the API's routes: forward a room route to the node that runs the room's live.
pub async fn to_the_live(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = app.cluster.clone() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let Some(room) = room_of(req.uri().path()) else {
        return next.run(req).await;
    };
    match cluster.owner(&room).await {
        Ok(Some(node)) => {
            // The largest body a room route takes is a product image (an SDP offer is smaller).
            let limit = app.config.commerce.max_image_bytes.max(crate::api::MAX_JSON_BYTES) + 64 * 1024;
            cluster.forward(&node, req, limit).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => {
            super::redis_error("owner", &e);
            next.run(req).await
        }
    }
}

impl Cluster {
    /// Relay `req` to `node` and its answer back.
    async fn forward(&self, node: &super::NodeRecord, req: Request, limit: usize) -> Response {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, limit).await else {
            return ApiError(AppError::new(ErrorCode::MessageTooLarge, format!("bodies are limited to {limit} bytes"))).into_response();
        };
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        self.relay(node, parts.method, path, &parts.headers, body).await
    }

    /// Send a call (already read) to `node`, and its answer back.
    pub(crate) async fn relay(
        &self,
        node: &super::NodeRecord,
        method: axum::http::Method,
        path: &str,
        headers: &axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let mut call = self.inner.http.request(method, format!("{}{path}", node.url)).body(body);
        for (name, value) in headers.iter().filter(|(n, _)| carried(n)) {
            call = call.header(name, value);
        }
        call = call.header(FORWARDED, self.id());
        let answer = match call.send().await {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!("onair_cluster_errors_total", "op" => "forward").increment(1);
                tracing::warn!(node = %node.id, %path, "cluster: forwarding an API call: {e}");
                let e = AppError::new(ErrorCode::Internal, format!("the node that runs this live ({}) did not answer", node.id));
                let mut res = ApiError(e).into_response();
                *res.status_mut() = StatusCode::BAD_GATEWAY;
                return res;
            }
        };
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(node = %node.id, %path, "cluster: reading a forwarded answer: {e}");
                return StatusCode::BAD_GATEWAY.into_response();
            }
        };
        let mut res = Response::new(Body::from(body));
        *res.status_mut() = status;
        for (name, value) in headers.iter().filter(|(n, _)| carried(n)) {
            res.headers_mut().append(name, value.clone());
        }
        res.headers_mut().insert(
            HeaderName::from_static("x-onair-node"),
            header::HeaderValue::from_str(&node.id).unwrap_or(header::HeaderValue::from_static("?")),
        );
        res
    }
}

impl Cluster {
    /// GET `path` on every other registered node, in parallel, with the caller's headers (and
    /// `X-Onair-Forwarded`): each node's JSON answer, or why there is none.
    pub async fn ask_others(&self, path: &str, headers: &axum::http::HeaderMap) -> Vec<(String, Result<serde_json::Value, String>)> {
        let nodes = match self.nodes().await {
            Ok(n) => n,
            Err(e) => {
                super::redis_error("nodes", &e);
                return Vec::new();
            }
        };
        let calls = nodes.into_iter().filter(|n| n.id != self.id()).map(|node| async move {
            let mut call = self.inner.http.get(format!("{}{path}", node.url)).header(FORWARDED, self.id());
            for (name, value) in headers.iter().filter(|(n, _)| carried(n)) {
                call = call.header(name, value);
            }
            let answer = async {
                let res = call.send().await.map_err(|e| e.to_string())?;
                if !res.status().is_success() {
                    return Err(format!("status {}", res.status()));
                }
                let body = res.bytes().await.map_err(|e| e.to_string())?;
                serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
            }
            .await;
            (node.id, answer)
        });
        futures_util::future::join_all(calls).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_routes_are_found_and_others_are_not() {
        assert_eq!(room_of("/api/v1/rooms/launch/end").as_deref(), Some("launch"));
        assert_eq!(room_of("/api/v1/rooms/caf%C3%A9/products/7/image").as_deref(), Some("café"));
        assert_eq!(room_of("/api/v1/rooms"), None);
        assert_eq!(room_of("/api/v1/rooms/launch"), None);
        assert_eq!(room_of("/api/v1/rooms//end"), None);
        assert_eq!(room_of("/api/v1/rooms/%FF/end"), None, "not UTF-8");
        assert_eq!(room_of("/api/v1/schedules/1/start"), None);
        assert_eq!(room_of("/whep/launch").as_deref(), Some("launch"));
        assert_eq!(room_of("/whip/launch/3f2a").as_deref(), Some("launch"));
        assert_eq!(room_of("/whip/"), None);
        assert_eq!(room_of("/embed/launch"), None);
    }
}
