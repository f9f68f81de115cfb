//! One participant's WebSocket: join with a token, relay offers and answers to the engine,
//! follow dynacast for publishers. Bounded: every wait has a timeout, and the task ends when the
//! run's stop signal fires.

use crate::engine::{Cmd, Engine, PublisherSpec};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

/// How a participant's join ended.
#[derive(Clone, Debug)]
pub enum JoinOutcome {
    Joined,
    Failed(String),
}

pub enum Role {
    Viewer { quality: Option<String> },
    Publisher(PublisherSpec),
}

async fn ask<T>(engine: &Engine, make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Cmd) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    engine.send(make(tx));
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| "engine did not answer".to_string())?
        .map_err(|_| "engine stopped".to_string())?
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Report a join outcome, once.
fn report(joined: &mut Option<oneshot::Sender<JoinOutcome>>, o: JoinOutcome) {
    if let Some(tx) = joined.take() {
        let _ = tx.send(o);
    }
}

/// Open a WebSocket within 10 s, optionally asking for a subprotocol.
async fn connect(url: &str, protocol: Option<&'static str>) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().map_err(|e| format!("websocket URL: {e}"))?;
    if let Some(p) = protocol {
        req.headers_mut().insert("Sec-WebSocket-Protocol", tokio_tungstenite::tungstenite::http::HeaderValue::from_static(p));
    }
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("websocket: {e}")),
        Err(_) => Err("websocket: connect timed out".into()),
    }
}

enum Incoming {
    Json(Value),
    /// Ping, pong, binary, or text that is not JSON.
    Skip,
    Closed,
}

fn incoming(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Incoming {
    match msg {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str()).map(Incoming::Json).unwrap_or(Incoming::Skip),
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Incoming::Closed,
        Some(Ok(_)) => Incoming::Skip,
    }
}

/// Run one participant until `stop`. Reports the join outcome once on `joined`.
pub async fn participant(
    ws_url: String,
    token: String,
    id: u64,
    role: Role,
    engine: Arc<Engine>,
    joined: oneshot::Sender<JoinOutcome>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut joined = Some(joined);
    let ws = match connect(&ws_url, None).await {
        Ok(ws) => ws,
        Err(e) => return report(&mut joined, JoinOutcome::Failed(e)),
    };
    let (mut sink, mut stream) = ws.split();
    let send = |v: Value| Message::Text(v.to_string().into());
    if sink.send(send(json!({"type":"join","token":token,"protocol":1}))).await.is_err() {
        return report(&mut joined, JoinOutcome::Failed("websocket closed before join".into()));
    }
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Until joined, a deadline; afterwards the run's stop signal ends the wait.
        let deadline = if joined.is_some() { join_deadline } else { tokio::time::Instant::now() + Duration::from_secs(3600) };
        let msg = tokio::select! {
            m = tokio::time::timeout_at(deadline, stream.next()) => match m {
                Ok(m) => m,
                Err(_) => { report(&mut joined, JoinOutcome::Failed("no joined within 10 s".into())); break; }
            },
            _ = stop.changed() => break,
        };
        let v = match incoming(msg) {
            Incoming::Json(v) => v,
            Incoming::Skip => continue,
            Incoming::Closed => {
                report(&mut joined, JoinOutcome::Failed("websocket closed".into()));
                break;
            }
        };
        match v["type"].as_str().unwrap_or_default() {
            "joined" => {
                report(&mut joined, JoinOutcome::Joined);
                match &role {
                    Role::Viewer { quality: Some(q) } => {
                        let _ = sink.send(send(json!({"type":"quality","quality":q}))).await;
                    }
                    Role::Viewer { .. } => {}
                    Role::Publisher(spec) => {
                        let spec = *spec;
                        match ask(&engine, |reply| Cmd::Publish { id, spec, reply }).await {
                            Ok(offer) => {
                                let _ = sink.send(send(json!({"type":"publish","sdp":offer}))).await;
                            }
                            Err(e) => eprintln!("publisher {id}: {e}"),
                        }
                    }
                }
            }
            "offer" => {
                let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                match ask(&engine, |reply| Cmd::Offer { id, sdp, started, reply }).await {
                    Ok(answer) => {
                        let _ = sink.send(send(json!({"type":"answer","sdp":answer}))).await;
                    }
                    Err(e) => eprintln!("viewer {id}: could not answer: {e}"),
                }
            }
            "answer" => {
                let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                if let Err(e) = ask(&engine, |reply| Cmd::Answer { id, sdp, reply }).await {
                    eprintln!("publisher {id}: answer: {e}");
                }
            }
            "layers" => {
                let max = v["max_layer"].as_u64().unwrap_or(2).min(2) as u8;
                engine.send(Cmd::Layers { id, max });
            }
            "error" => {
                let reason = format!("{}: {}", v["code"].as_str().unwrap_or("?"), v["message"].as_str().unwrap_or(""));
                if joined.is_some() {
                    report(&mut joined, JoinOutcome::Failed(reason));
                    break;
                }
                eprintln!("participant {id}: {reason}");
            }
            "room_ended" => break,
            _ => {}
        }
    }
    let _ = sink.send(Message::Text(json!({"type":"leave"}).to_string().into())).await;
    let _ = sink.close().await;
    engine.send(Cmd::Close { id });
}

/// A viewer of a Janus streaming mountpoint, over Janus's WebSocket API: create a session,
/// attach the streaming plugin, `watch` the mountpoint, answer Janus's offer with `start`.
pub async fn janus_viewer(
    ws_url: String,
    mountpoint: u64,
    id: u64,
    engine: Arc<Engine>,
    joined: oneshot::Sender<JoinOutcome>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut joined = Some(joined);
    let ws = match connect(&ws_url, Some("janus-protocol")).await {
        Ok(ws) => ws,
        Err(e) => return report(&mut joined, JoinOutcome::Failed(e)),
    };
    let (mut sink, mut stream) = ws.split();
    let mut tx_n = 0u64;
    let mut txn = || {
        tx_n += 1;
        format!("t{tx_n}")
    };
    let send = |v: Value| Message::Text(v.to_string().into());
    if sink.send(send(json!({"janus":"create","transaction":txn()}))).await.is_err() {
        return report(&mut joined, JoinOutcome::Failed("websocket closed".into()));
    }
    let (mut session, mut handle) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut keepalive = tokio::time::interval(Duration::from_secs(20));
    keepalive.tick().await;
    loop {
        let wait = if joined.is_some() { deadline } else { tokio::time::Instant::now() + Duration::from_secs(3600) };
        let msg = tokio::select! {
            m = tokio::time::timeout_at(wait, stream.next()) => match m {
                Ok(m) => m,
                Err(_) => { report(&mut joined, JoinOutcome::Failed("Janus did not set up the stream within 15 s".into())); break; }
            },
            _ = keepalive.tick() => {
                if session != 0 {
                    let _ = sink.send(send(json!({"janus":"keepalive","session_id":session,"transaction":txn()}))).await;
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        let v = match incoming(msg) {
            Incoming::Json(v) => v,
            Incoming::Skip => continue,
            Incoming::Closed => {
                report(&mut joined, JoinOutcome::Failed("websocket closed".into()));
                break;
            }
        };
        match v["janus"].as_str().unwrap_or_default() {
            "success" if session == 0 => {
                session = v["data"]["id"].as_u64().unwrap_or(0);
                let _ = sink
                    .send(send(json!({"janus":"attach","plugin":"janus.plugin.streaming","session_id":session,"transaction":txn()})))
                    .await;
            }
            "success" if handle == 0 => {
                handle = v["data"]["id"].as_u64().unwrap_or(0);
                let body = json!({"request":"watch","id":mountpoint});
                let _ = sink
                    .send(send(json!({"janus":"message","session_id":session,"handle_id":handle,"transaction":txn(),"body":body})))
                    .await;
            }
            "event" if v["jsep"]["type"] == "offer" => {
                let sdp = v["jsep"]["sdp"].as_str().unwrap_or_default().to_owned();
                match ask(&engine, |reply| Cmd::Offer { id, sdp, started, reply }).await {
                    Ok(answer) => {
                        let msg = json!({"janus":"message","session_id":session,"handle_id":handle,"transaction":txn(),
                            "body":{"request":"start"},"jsep":{"type":"answer","sdp":answer}});
                        let _ = sink.send(send(msg)).await;
                        let done = json!({"janus":"trickle","session_id":session,"handle_id":handle,"transaction":txn(),"candidate":{"completed":true}});
                        let _ = sink.send(send(done)).await;
                        report(&mut joined, JoinOutcome::Joined);
                    }
                    Err(e) => {
                        report(&mut joined, JoinOutcome::Failed(format!("could not answer Janus: {e}")));
                        break;
                    }
                }
            }
            "error" => {
                let reason = format!("Janus: {}", v["error"]["reason"].as_str().unwrap_or("?"));
                report(&mut joined, JoinOutcome::Failed(reason));
                break;
            }
            "event" if v["plugindata"]["data"]["error"].is_string() => {
                let reason = format!("Janus streaming: {}", v["plugindata"]["data"]["error"].as_str().unwrap_or("?"));
                report(&mut joined, JoinOutcome::Failed(reason));
                break;
            }
            _ => {}
        }
    }
    if session != 0 {
        let _ = sink.send(send(json!({"janus":"destroy","session_id":session,"transaction":"bye"}))).await;
    }
    let _ = sink.close().await;
    engine.send(Cmd::Close { id });
}
