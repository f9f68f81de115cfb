//! One participant's WebSocket: join with a token, relay offers and answers to the engine,
//! follow dynacast for publishers. Bounded: every wait has a timeout, and the task ends when the
//! run's stop signal fires.

use crate::chat::{self, ChatLive, Plan};
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

/// What the run asks of a participant while it runs.
#[derive(Clone, Copy, Debug)]
pub enum Ctl {
    /// The network changed (crate::fault::FaultKind::Reconnect): a new socket, the WebSocket
    /// dies without a close; resume on a new one and restart ICE, as the page does.
    Reconnect,
}

/// How the reconnects of a run went (counted by the viewers).
#[derive(Debug, Default)]
pub struct Reconnects {
    pub resumed: std::sync::atomic::AtomicUsize,
    pub rejoined: std::sync::atomic::AtomicUsize,
}

pub enum Role {
    Viewer { quality: Option<String> },
    Publisher(PublisherSpec),
}

/// A viewer's part in the conversation: what it sends while `on` is true, and the counters it
/// adds what it receives to.
pub struct ChatSide {
    pub live: Arc<ChatLive>,
    pub plan: Plan,
    pub on: watch::Receiver<bool>,
}

/// When a viewer next comments and next reacts (nothing while the chat load is off).
#[derive(Default)]
struct Pacer {
    comment: Option<tokio::time::Instant>,
    react: Option<tokio::time::Instant>,
    seq: u64,
}

impl Pacer {
    /// Start (random phases, so the senders together send evenly) or stop.
    fn set(&mut self, on: bool, plan: &Plan) {
        let now = tokio::time::Instant::now();
        let phase = |every: Duration| now + every.mul_f64(rand::random::<f64>());
        self.comment = plan.comment_every.filter(|_| on).map(phase);
        self.react = plan.react.filter(|_| on).map(|(every, _)| phase(every));
    }

    fn next(&self) -> Option<tokio::time::Instant> {
        match (self.comment, self.react) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The messages due now; the next times move on by one period (or from now, when the
    /// harness fell behind by more than one).
    fn due(&mut self, id: u64, plan: &Plan) -> Vec<Value> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        let step = |at: &mut tokio::time::Instant, every: Duration| {
            *at += every;
            if *at < now {
                *at = now + every;
            }
        };
        if let (Some(at), Some(every)) = (self.comment.as_mut(), plan.comment_every)
            && *at <= now
        {
            self.seq += 1;
            out.push(json!({"type":"comment","text":chat::text(id, self.seq)}));
            step(at, every);
        }
        if let (Some(at), Some((every, (lo, hi)))) = (self.react.as_mut(), plan.react)
            && *at <= now
        {
            let taps = rand::random_range(lo.min(hi)..=hi.max(lo));
            for _ in 0..taps {
                out.push(json!({"type":"react","emoji":chat::EMOJI[rand::random_range(0..chat::EMOJI.len())]}));
            }
            step(at, every);
        }
        out
    }
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
    /// A comment's text (read without building a JSON tree: there are thousands a second).
    Comment(String),
    /// A reactions window's sums (only counted).
    Reactions,
    Json(Value),
    /// Ping, pong, binary, or text that is not JSON.
    Skip,
    Closed,
}

#[derive(serde::Deserialize)]
struct CommentMsg {
    comment: CommentText,
}

#[derive(serde::Deserialize)]
struct CommentText {
    text: String,
}

/// The server writes `type` first (serde's internally tagged enums do).
fn chat_message(text: &str) -> Option<Incoming> {
    if text.starts_with(r#"{"type":"reactions""#) {
        return Some(Incoming::Reactions);
    }
    if text.starts_with(r#"{"type":"comment""#) {
        return serde_json::from_str::<CommentMsg>(text).ok().map(|m| Incoming::Comment(m.comment.text));
    }
    None
}

fn incoming(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Incoming {
    match msg {
        Some(Ok(Message::Text(text))) => {
            chat_message(text.as_str()).unwrap_or_else(|| serde_json::from_str(text.as_str()).map(Incoming::Json).unwrap_or(Incoming::Skip))
        }
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Incoming::Closed,
        Some(Ok(_)) => Incoming::Skip,
    }
}

/// Run one participant until `stop`. Reports the join outcome once on `joined`. With `chat`, it
/// comments and reacts as its plan says while the chat load is on, and counts what it receives.
#[allow(clippy::too_many_arguments)]
pub async fn participant(
    mut ws_url: String,
    token: String,
    id: u64,
    role: Role,
    engine: Arc<Engine>,
    joined: oneshot::Sender<JoinOutcome>,
    mut stop: watch::Receiver<bool>,
    mut chat: Option<ChatSide>,
    mut ctl: Option<(tokio::sync::mpsc::UnboundedReceiver<Ctl>, Arc<Reconnects>)>,
) {
    let started = Instant::now();
    let mut joined = Some(joined);
    let ws = match connect(&ws_url, None).await {
        Ok(ws) => ws,
        Err(e) => return report(&mut joined, JoinOutcome::Failed(e)),
    };
    let (mut sink, mut stream) = ws.split();
    // The last `joined`'s resume token, and whether a resume is on its way.
    let mut resume_token: Option<String> = None;
    let mut resuming = false;
    // Redirects followed before joining (a cluster's node sends a join to the live's node).
    let mut redirects = 0u32;
    let send = |v: Value| Message::Text(v.to_string().into());
    if sink.send(send(json!({"type":"join","token":token,"protocol":1}))).await.is_err() {
        return report(&mut joined, JoinOutcome::Failed("websocket closed before join".into()));
    }
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut pacer = Pacer::default();
    let mut listening = false;
    let mut chat_ended = chat.is_none();
    let viewer = matches!(role, Role::Viewer { .. });
    // QoE every 10 s once joined (docs/protocol.md §15), like the page.
    let mut qoe_at: Option<tokio::time::Instant> = None;
    let mut qoe_sent: Option<tokio::time::Instant> = None;
    loop {
        // Until joined, a deadline; afterwards the run's stop signal ends the wait.
        let deadline = if joined.is_some() { join_deadline } else { tokio::time::Instant::now() + Duration::from_secs(3600) };
        let next_chat = pacer.next().filter(|_| joined.is_none());
        let msg = tokio::select! {
            m = tokio::time::timeout_at(deadline, stream.next()) => match m {
                Ok(m) => m,
                Err(_) => { report(&mut joined, JoinOutcome::Failed("no joined within 10 s".into())); break; }
            },
            _ = stop.changed() => break,
            c = async {
                match ctl.as_mut() {
                    Some((rx, _)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match c {
                    Some(Ctl::Reconnect) => {
                        if let Err(e) = ask(&engine, |reply| Cmd::Move { id, reply }).await {
                            eprintln!("viewer {id}: could not move: {e}");
                        }
                        // A new WebSocket (the old one dies with the old network: dropped,
                        // no close frame), a few tries as a page would.
                        let mut ws = None;
                        for attempt in 0..5u32 {
                            match connect(&ws_url, None).await {
                                Ok(w) => {
                                    ws = Some(w);
                                    break;
                                }
                                Err(e) => {
                                    eprintln!("viewer {id}: reconnect attempt {}: {e}", attempt + 1);
                                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                                }
                            }
                        }
                        let Some(ws) = ws else { break };
                        (sink, stream) = ws.split();
                        let mut join = json!({"type":"join","token":token,"protocol":1});
                        if let Some(t) = &resume_token {
                            join["resume"] = json!(t);
                        }
                        if sink.send(send(join)).await.is_err() {
                            break;
                        }
                        resuming = true;
                    }
                    None => ctl = None,
                }
                continue;
            }
            _ = tokio::time::sleep_until(qoe_at.unwrap_or_else(tokio::time::Instant::now)), if qoe_at.is_some() => {
                if let Some(report) = qoe_report(&engine, id).await
                    && sink.send(send(report)).await.is_ok()
                {
                    qoe_sent = Some(tokio::time::Instant::now());
                }
                qoe_at = Some(tokio::time::Instant::now() + QOE_EVERY);
                continue;
            }
            changed = async {
                match chat.as_mut() {
                    Some(c) => c.on.changed().await.map(|_| *c.on.borrow_and_update()),
                    None => std::future::pending().await,
                }
            }, if !chat_ended => {
                match (changed, &chat) {
                    (Ok(on), Some(c)) if joined.is_none() => pacer.set(on, &c.plan),
                    (Ok(_), _) => {}
                    (Err(_), _) => {
                        chat_ended = true;
                        pacer = Pacer::default();
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(next_chat.unwrap_or_else(tokio::time::Instant::now)), if next_chat.is_some() => {
                if let Some(c) = &chat {
                    for m in pacer.due(id, &c.plan) {
                        let comment = m["type"] == "comment";
                        if sink.send(send(m)).await.is_err() {
                            break;
                        }
                        let counter = if comment { &c.live.comments_sent } else { &c.live.taps_sent };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                continue;
            }
        };
        let v = match incoming(msg) {
            Incoming::Json(v) => v,
            Incoming::Comment(text) => {
                if let Some(c) = &chat {
                    c.live.comment(&text);
                }
                continue;
            }
            Incoming::Reactions => {
                if let Some(c) = &chat {
                    c.live.reactions_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            Incoming::Skip => continue,
            Incoming::Closed => {
                report(&mut joined, JoinOutcome::Failed("websocket closed".into()));
                break;
            }
        };
        match v["type"].as_str().unwrap_or_default() {
            // Many nodes (docs/protocol.md §3.2): join again at the live's node, as the page does.
            "redirect" if joined.is_some() => {
                redirects += 1;
                let Some(url) = v["url"].as_str().filter(|_| redirects <= 3) else {
                    report(&mut joined, JoinOutcome::Failed(format!("redirect {redirects}: {v}")));
                    break;
                };
                ws_url = url.to_owned();
                let ws = match connect(&ws_url, None).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        report(&mut joined, JoinOutcome::Failed(format!("redirected to {ws_url}: {e}")));
                        break;
                    }
                };
                (sink, stream) = ws.split();
                if sink.send(send(json!({"type":"join","token":token,"protocol":1}))).await.is_err() {
                    report(&mut joined, JoinOutcome::Failed("websocket closed before join".into()));
                    break;
                }
                continue;
            }
            "joined" => {
                report(&mut joined, JoinOutcome::Joined);
                resume_token = v["resume_token"].as_str().map(str::to_owned);
                if std::mem::take(&mut resuming) {
                    let counts = ctl.as_ref().map(|(_, c)| c.clone());
                    if v["resumed"] == true {
                        // The same participant: its subscriptions stand; a new path for the
                        // media (docs/protocol.md §3.6).
                        if let Some(c) = counts {
                            c.resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let _ = sink.send(send(json!({"type":"ice_restart"}))).await;
                        continue;
                    }
                    // Joined afresh: a new participant, so a new peer connection.
                    if let Some(c) = counts {
                        c.rejoined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    engine.send(Cmd::Reset { id });
                }
                if viewer {
                    qoe_at = Some(tokio::time::Instant::now() + QOE_EVERY);
                }
                if let Some(c) = chat.as_mut()
                    && !listening
                {
                    listening = true;
                    c.live.listening.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let on = *c.on.borrow_and_update();
                    pacer.set(on, &c.plan);
                }
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
                match &chat {
                    // Counted (rate_limited and the like), not printed: there can be thousands.
                    Some(c) => c.live.error(v["code"].as_str().unwrap_or("?")),
                    None => eprintln!("participant {id}: {reason}"),
                }
            }
            "room_ended" => break,
            _ => {}
        }
    }
    if let (Some(c), true) = (&chat, listening) {
        c.live.listening.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    // The last report before leaving, so the server's KPIs cover the whole run (the server
    // takes one report every 2 s: wait out the rest of that).
    if qoe_at.is_some() {
        if let Some(sent) = qoe_sent {
            tokio::time::sleep_until(sent + Duration::from_millis(2_050)).await;
        }
        if let Some(report) = qoe_report(&engine, id).await {
            let _ = sink.send(send(report)).await;
        }
    }
    // What the server made of the viewer's feedback (docs/protocol.md `stats`), before leaving.
    if qoe_at.is_some() && sink.send(send(json!({"type":"get_stats"}))).await.is_ok() {
        let until = tokio::time::Instant::now() + STATS_WAIT;
        for _ in 0..STATS_SKIP {
            let Ok(Incoming::Json(v)) = tokio::time::timeout_at(until, stream.next()).await.map(incoming) else { break };
            if v["type"] == "stats" {
                let twcc_feedback = v["twcc_feedback"].as_u64().unwrap_or(0);
                engine.send(Cmd::ServerView { id, twcc_feedback, estimate_bps: v["bandwidth_bps"].as_u64() });
                break;
            }
        }
    }
    let _ = sink.send(Message::Text(json!({"type":"leave"}).to_string().into())).await;
    let _ = sink.close().await;
    engine.send(Cmd::Close { id });
}

/// How long a leaving viewer waits for the server's `stats`, and how many other messages it
/// reads past on the way.
const STATS_WAIT: Duration = Duration::from_secs(2);
const STATS_SKIP: usize = 1000;

/// How often a viewer reports its QoE.
pub const QOE_EVERY: Duration = Duration::from_secs(10);

/// Viewer `id`'s `qoe` message now, from the engine's frames.
async fn qoe_report(engine: &Engine, id: u64) -> Option<Value> {
    let q = ask(engine, |reply| Cmd::Qoe { id, reply }).await.ok()?;
    Some(json!({
        "type": "qoe",
        "client": "loadtest",
        "first_frame_ms": q.first_frame_ms,
        "frames_decoded": q.frames,
        "freezes": q.freezes,
        "freeze_ms": q.freeze_ms,
        "recoveries_ms": q.recoveries_ms,
        "layer": q.layer.map(|l| ["q", "h", "f"][usize::from(l.min(2))]),
        "watch_ms": q.watch_ms,
    }))
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
            Incoming::Skip | Incoming::Comment(_) | Incoming::Reactions => continue,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_are_read_as_the_server_writes_them() {
        let comment = signaling::protocol::ServerMsg::Comment {
            comment: signaling::protocol::CommentView {
                id: 7,
                identity: "lt-viewer-3".into(),
                name: "lt-viewer-3".into(),
                role: signaling::auth::Role::Viewer,
                text: "lt 1003 1 1700000000000000".into(),
                at: 1,
                badge: None,
            },
        };
        let json = serde_json::to_string(&comment).unwrap();
        assert!(matches!(chat_message(&json), Some(Incoming::Comment(t)) if t == "lt 1003 1 1700000000000000"), "{json}");
        let sums = signaling::protocol::ServerMsg::Reactions { counts: Default::default(), totals: Default::default() };
        assert!(matches!(chat_message(&serde_json::to_string(&sums).unwrap()), Some(Incoming::Reactions)));
        assert!(chat_message(r#"{"type":"comment_deleted","id":7}"#).is_none());
        assert!(chat_message(r#"{"type":"joined"}"#).is_none());
    }
}
