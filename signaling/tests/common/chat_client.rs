//! A participant with only the WebSocket (no media): what a chat client is. Used by the
//! conversation and stage tests.

use super::{RawWs, next_json, raw_ws, token};
use futures_util::SinkExt;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const T: Duration = Duration::from_secs(5);

/// A participant with only the WebSocket (no media): what a chat client is.
pub struct Chat {
    pub ws: RawWs,
    pub joined: Value,
    /// Messages read while waiting for another kind, in order.
    pub seen: Vec<Value>,
    pub identity: String,
}

impl Chat {
    pub async fn join(server: &signaling::Server, room: &str, identity: &str, role: Role) -> Result<Chat, (Value, Value)> {
        let mut ws = raw_ws(server).await;
        let token = token(server, room, identity, role);
        ws.send(Message::Text(json!({"type": "join", "token": token, "protocol": 1}).to_string().into())).await.expect("send join");
        let joined = next_json(&mut ws, T).await.expect("reply to join");
        if joined["type"] != "joined" {
            let close = next_json(&mut ws, T).await.unwrap_or(Value::Null);
            return Err((joined, close));
        }
        Ok(Chat { ws, joined, seen: Vec::new(), identity: identity.into() })
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.expect("send");
    }

    /// The next message of `kind` matching `pred`, within `within` (others are kept in `seen`).
    pub async fn expect_where(&mut self, kind: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(v) = next_json(&mut self.ws, left).await else {
                panic!("{}: no {kind} within {within:?}; seen {:?}", self.identity, self.seen);
            };
            if v["type"] == kind && pred(&v) {
                return v;
            }
            // A closed socket delivers nothing more: waiting on would read the close again and
            // again until the deadline (and fill memory with copies of it).
            if v.get("close").is_some() {
                panic!("{}: the connection closed ({}) before any {kind}; seen {:?}", self.identity, v["close"], self.seen);
            }
            self.seen.push(v);
        }
    }

    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_where(kind, T, |_| true).await
    }

    /// Send and expect an error with `code`.
    pub async fn refused(&mut self, v: Value, code: &str) -> Value {
        self.send(v).await;
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "{}: {e}", self.identity);
        e
    }

    pub async fn comment(&mut self, text: &str) -> Value {
        self.comment_as(text, text).await
    }

    /// Send `text`; expect our own comment back as `shown` (cleaned by the server).
    pub async fn comment_as(&mut self, text: &str, shown: &str) -> Value {
        self.send(json!({"type": "comment", "text": text})).await;
        let me = self.identity.clone();
        self.expect_where("comment", T, |v| v["comment"]["text"] == shown && v["comment"]["identity"] == me.as_str()).await["comment"]
            .clone()
    }

    /// Whether any message read so far (or now, draining for `within`) is a comment with `text`.
    pub async fn saw_comment(&mut self, text: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Some(v) = next_json(&mut self.ws, deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            let closed = v.get("close").is_some();
            self.seen.push(v);
            if closed {
                break;
            }
        }
        self.seen.iter().any(|v| v["type"] == "comment" && v["comment"]["text"] == text)
    }
}
