//! The WebSocket transport: the HTTP upgrade, framing limits, and a close that reaches the client.
//!
//! axum's `WebSocket` hides the TCP stream, and tungstenite refuses a frame over its size cap after
//! reading only the frame's header: the rest of the frame is still unread when the server closes,
//! and a TCP socket closed with unread input sends a reset — the client then sees 1006 instead of
//! the close code the server sent. So the upgrade is done here, on tokio-tungstenite directly, and
//! every close is *sent, then lingered on*: the write half is shut (FIN after the close frame) and
//! input is read and discarded until the client hangs up, for at most [`LINGER`] or
//! [`LINGER_BYTES`] (the RTMP side closes a refused encoder the same way).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Close codes (RFC 6455 §7.4 and the private range; docs/protocol.md §3.4).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The node is draining: come back (to another node, or later).
pub const CLOSE_RESTART: u16 = 1012;
/// Join or authentication refused; the preceding `error` message has the reason.
pub const CLOSE_AUTH: u16 = 4001;
/// Removed by a moderator (banned from the live).
pub const CLOSE_KICKED: u16 = 4003;
/// The client did not keep up: it stopped reading for `limits.write_timeout_secs`, or its
/// messages overflowed more than `limits.max_resyncs_per_minute` times in a minute.
pub const CLOSE_SLOW: u16 = 4008;
/// Sent after `redirect`: the room's live is on another node; join there.
pub const CLOSE_REDIRECT: u16 = 4010;
/// From the client: it closes this connection to open another and resume (docs/protocol.md
/// §3.5), so its participant waits for the resume as after a drop.
pub const CLOSE_CLIENT_RECONNECTING: u16 = 4000;

/// Hard cap on one WebSocket frame and message; larger ones are refused by the WebSocket layer
/// itself (close 1009). The protocol limit (`limits.max_message_bytes`) is enforced below it
/// with a clean error and the connection stays.
pub const HARD_MESSAGE_CAP: usize = 1024 * 1024;
/// How long one write waits for the client to read, unless set (`Socket::set_write_timeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client to hang up.
pub const LINGER: Duration = Duration::from_secs(2);
/// How much unread input a closing connection discards before it gives up (a frame of up to
/// about this size still gets its close code; a larger one is reset).
pub const LINGER_BYTES: usize = 4 * HARD_MESSAGE_CAP;
/// Bytes one read from the socket takes at most. tungstenite's default (128 KiB) is zero-filled
/// at a connection's first read and stays resident: 128 KiB per viewer, most of a signaling
/// connection's memory, for messages that are a few hundred bytes. A larger frame still arrives
/// whole: the buffer grows to the length its header announces.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

type Stream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A text message ready to send, cheap to clone (one serialisation, many connections).
pub type Text = Utf8Bytes;

/// One upgraded WebSocket connection.
pub struct Socket {
    inner: Stream,
    /// How long one write may wait for the client to read (`limits.write_timeout_secs`).
    write_timeout: Duration,
    /// A write gave up after `write_timeout`: the client stopped reading.
    stalled: bool,
}

/// Why a `recv` did not give a message.
pub enum Recv {
    Message(Message),
    /// The client closed (a close frame, with its code).
    Closed(Option<u16>),
    /// The connection ended without a close frame (the network went, the browser was killed),
    /// or broke.
    Gone,
    /// The WebSocket layer refused what arrived (a frame over the cap, broken framing).
    Refused(tungstenite::Error),
}

impl Socket {
    pub async fn recv(&mut self) -> Recv {
        match self.inner.next().await {
            Some(Ok(Message::Close(frame))) => Recv::Closed(frame.map(|f| u16::from(f.code))),
            None => Recv::Gone,
            Some(Ok(m)) => Recv::Message(m),
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => Recv::Closed(None),
            // The TCP connection ended without a close frame (the network went, the browser was
            // killed), or broke: gone, not a bad frame.
            Some(Err(
                tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) | tungstenite::Error::Io(_),
            )) => Recv::Gone,
            Some(Err(e)) => Recv::Refused(e),
        }
    }

    /// Bound every later write by `d` (the default is 10 s).
    pub fn set_write_timeout(&mut self, d: Duration) {
        self.write_timeout = d;
    }

    /// Whether a write gave up because the client did not read for the write timeout. The
    /// connection is then unusable (a frame may be half written): close it.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Run one write under the write timeout; false when it failed or timed out.
    async fn write<F: Future<Output = Result<(), tungstenite::Error>>>(timeout: Duration, stalled: &mut bool, f: F) -> bool {
        if *stalled {
            return false;
        }
        match tokio::time::timeout(timeout, f).await {
            Ok(r) => r.is_ok(),
            Err(_) => {
                *stalled = true;
                false
            }
        }
    }

    /// Send one text message; false when the connection is gone (or the client stopped reading).
    pub async fn send_text(&mut self, text: String) -> bool {
        Self::write(self.write_timeout, &mut self.stalled, self.inner.send(Message::Text(text.into()))).await
    }

    /// Send `value` as one JSON text message; false when the connection is gone (or, a bug,
    /// the value does not serialise).
    pub async fn send_json<T: serde::Serialize>(&mut self, value: &T) -> bool {
        match serde_json::to_string(value) {
            Ok(text) => self.send_text(text).await,
            Err(e) => {
                tracing::error!("serialising a message: {e}");
                false
            }
        }
    }

    /// Queue a text message without writing it out yet; `flush` writes everything queued in
    /// one go. False when the connection is gone.
    pub async fn feed(&mut self, text: Text) -> bool {
        Self::write(self.write_timeout, &mut self.stalled, self.inner.feed(Message::Text(text))).await
    }

    pub async fn flush(&mut self) -> bool {
        Self::write(self.write_timeout, &mut self.stalled, self.inner.flush()).await
    }

    pub async fn ping(&mut self) -> bool {
        Self::write(self.write_timeout, &mut self.stalled, self.inner.send(Message::Ping(Default::default()))).await
    }

    /// The client closed (or vanished): send the reply to its close frame that tungstenite has
    /// queued, so the client sees a clean close handshake.
    pub async fn finish(mut self) {
        let _ = tokio::time::timeout(LINGER, self.inner.flush()).await;
    }

    /// Send a close frame, then linger until the client hangs up (see the module doc).
    pub async fn close(mut self, code: u16, reason: &str) {
        // A close reason is at most 123 bytes (RFC 6455 §5.5); cut on a character boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame { code: code.into(), reason: Utf8Bytes::from(reason[..end].to_owned()) };
        let sent = tokio::time::timeout(LINGER, async {
            let _ = self.inner.send(Message::Close(Some(frame))).await;
            let _ = self.inner.flush().await;
        })
        .await;
        if sent.is_err() {
            return; // the client reads nothing: nothing to wait for
        }
        let io = self.inner.get_mut();
        let _ = tokio::time::timeout(LINGER, async {
            let _ = io.shutdown().await;
            let mut buf = vec![0u8; 64 * 1024];
            let mut drained = 0usize;
            while drained < LINGER_BYTES {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Answer a WebSocket upgrade request (RFC 6455 §4.2) and run `serve` on the connection once it
/// is upgraded. A request that is not a valid upgrade gets 400 (426 for a wrong version).
pub fn upgrade<F, Fut>(mut req: Request, serve: F) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    if req.method() != Method::GET
        || !header_has(headers, header::CONNECTION, "upgrade")
        || !header_has(headers, header::UPGRADE, "websocket")
    {
        return (StatusCode::BAD_REQUEST, "a WebSocket upgrade request is expected here").into_response();
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return (StatusCode::UPGRADE_REQUIRED, [(header::SEC_WEBSOCKET_VERSION, "13")], "WebSocket version 13 is required").into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec()) else {
        return (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing").into_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded").into_response();
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(HARD_MESSAGE_CAP))
            .max_frame_size(Some(HARD_MESSAGE_CAP))
            .read_buffer_size(READ_BUFFER_BYTES);
        let inner = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        serve(Socket { inner, write_timeout: DEFAULT_WRITE_TIMEOUT, stalled: false }).await;
    });
    let accept = tungstenite::handshake::derive_accept_key(&key);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // Base64 of a SHA-1 digest: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}
