//! The cascade between nodes (docs/architecture.md §3.9): a live runs on one node, its
//! *origin*; another node that viewers reach becomes an *edge* of the live and serves their
//! media itself, from the origin's tracks relayed to it once (sfu `relay`), however many
//! viewers it has. The room — members, comments, moderation, the stage — stays the origin's:
//! each viewer's messages go there through the edge (cluster/edge.rs).
//!
//! ```text
//!  edge ──WS /internal/v1/relay?room=&media= (signed)──► origin
//!       ◄── tracks {salt, tracks: [{track, publisher, kind, codec, layers, leg}]}  (the stage, whenever it changes)
//!       ──► open {legs}            the edge published them: the origin starts sending
//!       ──► keyframe {track, layer} / layers {track, max_layer}   what the edge's viewers need
//!       ──► alive                  every 5 s (the origin pings as often); 30 s of silence either
//!                                  way ends the link
//!  origin ══ sealed datagrams, one leg per track, on the media port ══► edge
//! ```
//!
//! Trust: node-to-node calls carry `X-Onair-Cluster: <unix secs>.<hex HMAC-SHA256>` over what
//! they ask, keyed with `cluster.secret` and good for a minute; each leg's key is
//! HMAC-SHA256(secret, "onair relay key" ‖ salt ‖ leg), so no key crosses the wire. Locks: the
//! edge's map of rooms is a leaf lock taken in single statements, never across an await.

use crate::app::AppState;
use crate::cluster::NodeRecord;
use crate::error::{AppError, ErrorCode};
use crate::transport::websocket::{Recv, Socket, WsMessage};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sfu::relay::RelayStats;
use sfu::{CodecInfo, MediaKind, ParticipantId, RelayOut, RelayTrack, SfuEvent, TrackId, TrackInfo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite;

/// The header that signs a node-to-node call.
pub const HEADER: &str = "x-onair-cluster";
/// How long a signature is good for (either way: the nodes' clocks may differ a little).
const SIGNATURE_SECS: u64 = 60;
/// The edge says it is there this often; the origin ends a link silent for six of these.
const ALIVE: Duration = Duration::from_secs(5);
const SILENT: Duration = Duration::from_secs(30);
/// An edge keeps a room's relay this long after its last viewer left (one who comes back soon
/// starts at once).
const LINGER: Duration = Duration::from_secs(10);
/// An edge waits this long for the origin's first word.
pub const CONNECT: Duration = Duration::from_secs(5);
/// Messages on a link are small; anything longer is refused.
const MAX_LINK_MESSAGE: usize = 64 * 1024;

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn mac(secret: &[u8]) -> Hmac<sha2::Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    #[allow(clippy::expect_used)]
    Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC accepts any key length") // cannot fail: any length
}

/// The `X-Onair-Cluster` value for a call about `what`, made now.
pub fn sign(secret: &[u8], what: &str) -> String {
    sign_at(secret, what, unix_secs())
}

fn sign_at(secret: &[u8], what: &str, at: u64) -> String {
    let mut m = mac(secret);
    m.update(format!("{what}\n{at}").as_bytes());
    format!("{at}.{}", hex::encode(m.finalize().into_bytes()))
}

/// Whether `value` signs `what` with `secret`, within the last (or next) minute.
pub fn verify(secret: &[u8], what: &str, value: &str) -> bool {
    let Some((at, sig)) = value.split_once('.') else { return false };
    let (Ok(at), Ok(sig)) = (at.parse::<u64>(), hex::decode(sig)) else { return false };
    if unix_secs().abs_diff(at) > SIGNATURE_SECS {
        return false;
    }
    let mut m = mac(secret);
    m.update(format!("{what}\n{at}").as_bytes());
    m.verify_slice(&sig).is_ok()
}

/// A leg's key: both ends derive it; only the salt and the leg id travel.
pub fn leg_key(secret: &[u8], salt: &str, leg: u32) -> [u8; 16] {
    let mut m = mac(secret);
    m.update(b"onair relay key\n");
    m.update(salt.as_bytes());
    m.update(&leg.to_be_bytes());
    let full = m.finalize().into_bytes();
    let mut key = [0u8; 16];
    key.copy_from_slice(&full[..16]);
    key
}

/// What a relay link's request signs.
pub fn relay_what(room: &str, media: SocketAddr) -> String {
    format!("relay\n{room}\n{media}")
}

/// What an edge's member connection signs (the origin then serves that member no media).
pub fn member_what(room: &str, edge: &str) -> String {
    format!("member\n{room}\n{edge}")
}

/// A track of the stage, as the origin describes it to an edge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WireTrack {
    pub track: TrackId,
    /// Its publisher at the origin (the edge does not send a member its own tracks).
    pub publisher: ParticipantId,
    pub kind: MediaKind,
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
    /// Simulcast layers it may have.
    pub layers: u8,
    pub leg: u32,
}

/// Origin → edge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OriginMsg {
    Tracks { salt: String, tracks: Vec<WireTrack> },
}

/// Edge → origin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EdgeMsg {
    Open { legs: Vec<u32> },
    Keyframe { track: TrackId, layer: u8 },
    Layers { track: TrackId, max_layer: u8 },
    Alive,
}

#[derive(Deserialize)]
pub struct RelayQuery {
    room: String,
    media: SocketAddr,
}

/// `GET /internal/v1/relay`: an edge asks for a live's tracks (origin side).
pub async fn relay_handler(
    axum::extract::Query(q): axum::extract::Query<RelayQuery>,
    axum::extract::State(app): axum::extract::State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(secret) = app.cluster.as_ref().and_then(|c| c.cascade_secret()).map(<[u8]>::to_vec) else {
        return (axum::http::StatusCode::NOT_FOUND, "the cascade is off on this node").into_response();
    };
    let signed = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).is_some_and(|v| verify(&secret, &relay_what(&q.room, q.media), v));
    if !signed {
        metrics::counter!("onair_cascade_refused_total", "what" => "relay").increment(1);
        return (axum::http::StatusCode::UNAUTHORIZED, "not signed by a node of this cluster").into_response();
    }
    let Some(room) = app.rooms.get(&q.room) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such live on this node").into_response();
    };
    let stage = crate::live::room::lock(&room).watch_stage();
    drop(room);
    crate::transport::websocket::upgrade(req, move |socket| relay_link(socket, app, secret, q.room, q.media, stage))
}

/// Layers the origin describes for a track (the edge learns the real ones as they arrive).
fn layers_of(kind: MediaKind) -> u8 {
    match kind {
        MediaKind::Video => 3,
        MediaKind::Audio => 1,
    }
}

/// One edge's link, origin side: the stage's tracks out, what the edge's viewers need in.
async fn relay_link(
    mut socket: Socket,
    app: AppState,
    secret: Vec<u8>,
    room: String,
    media: SocketAddr,
    mut stage: watch::Receiver<Vec<TrackInfo>>,
) {
    let salt = hex::encode(rand::random::<[u8; 16]>());
    let stats = Arc::new(RelayStats::default());
    // Track → (leg, relaying): a leg is assigned when the track is described, and relayed once
    // the edge opened it.
    let mut legs: HashMap<TrackId, (u32, bool)> = HashMap::new();
    tracing::info!(%room, edge = %media, "cascade: an edge links to this live");
    metrics::gauge!("onair_cascade_links", "side" => "origin").increment(1.0);
    let mut heard = Instant::now();
    let mut check = tokio::time::interval(ALIVE);
    // The stage as it is now goes out first.
    stage.mark_changed();
    loop {
        let changed = tokio::select! {
                r = stage.changed() => {
                    if r.is_err() {
                        tracing::info!(%room, edge = %media, "cascade: the live closed; its link ends");
                        break;
                    }
                    true
                }
                m = socket.recv() => {
                    heard = Instant::now();
                    match m {
                        Recv::Message(WsMessage::Text(t)) if t.len() <= MAX_LINK_MESSAGE => {
                            match serde_json::from_str::<EdgeMsg>(t.as_str()) {
                                Ok(msg) => on_edge_msg(&app, &secret, &salt, media, &stats, &mut legs, msg),
                                Err(e) => tracing::debug!(%room, "cascade: a link message refused: {e}"),
                            }
                            false
                        }
                        Recv::Message(WsMessage::Text(_) | WsMessage::Binary(_)) => {
                            tracing::warn!(%room, edge = %media, "cascade: an oversized or binary link message: link closed");
                            break;
                        }
                        Recv::Message(_) => false,
                        Recv::Closed(_) | Recv::Gone | Recv::Refused(_) => break,
                    }
                }
                _ = check.tick() => {
                    if heard.elapsed() > SILENT {
                        tracing::warn!(%room, edge = %media, "cascade: the edge fell silent; link closed");
                        break;
                    }
                    // The edge watches for the origin's silence the same way.
                    if !socket.ping().await {
                        break;
                    }
                    false
                }
        };
        if !changed {
            continue;
        }
        let tracks: Vec<TrackInfo> = stage.borrow_and_update().clone();
        // Tracks gone from the stage stop being relayed.
        legs.retain(|track, (leg, relaying)| {
            let keep = tracks.iter().any(|t| t.id == *track);
            if !keep && *relaying {
                app.sfu.stop_relay(*track, *leg);
            }
            keep
        });
        let wire: Vec<WireTrack> = tracks
            .iter()
            .map(|t| {
                let (leg, _) = *legs.entry(t.id).or_insert_with(|| (rand::random::<u32>(), false));
                WireTrack {
                    track: t.id,
                    publisher: t.publisher,
                    kind: t.kind,
                    mime_type: t.codec.mime_type.clone(),
                    clock_rate: t.codec.clock_rate,
                    channels: t.codec.channels,
                    fmtp: t.codec.fmtp.clone(),
                    layers: layers_of(t.kind),
                    leg,
                }
            })
            .collect();
        if !socket.send_json(&OriginMsg::Tracks { salt: salt.clone(), tracks: wire }).await {
            break;
        }
    }
    for (track, (leg, relaying)) in legs {
        if relaying {
            app.sfu.stop_relay(track, leg);
        }
    }
    let s = stats.snapshot();
    tracing::info!(%room, edge = %media, packets = s.packets, bytes = s.bytes, "cascade: link to an edge ended");
    metrics::gauge!("onair_cascade_links", "side" => "origin").decrement(1.0);
    socket.close(crate::transport::websocket::CLOSE_NORMAL, "link ended").await;
}

fn on_edge_msg(
    app: &AppState,
    secret: &[u8],
    salt: &str,
    media: SocketAddr,
    stats: &Arc<RelayStats>,
    legs: &mut HashMap<TrackId, (u32, bool)>,
    msg: EdgeMsg,
) {
    match msg {
        EdgeMsg::Open { legs: open } => {
            for (track, (leg, relaying)) in legs.iter_mut() {
                if !*relaying && open.contains(leg) {
                    *relaying = true;
                    // The lowest layer to start with; the edge's viewers' demand raises it.
                    app.sfu.relay_to(*track, RelayOut::new(*leg, media, &leg_key(secret, salt, *leg), 0, stats.clone()));
                }
            }
        }
        EdgeMsg::Keyframe { track, layer } => {
            if legs.get(&track).is_some_and(|(_, r)| *r) {
                if layer == u8::MAX { app.sfu.request_keyframes(track) } else { app.sfu.request_keyframe(track, layer) }
            }
        }
        EdgeMsg::Layers { track, max_layer } => {
            if let Some((leg, true)) = legs.get(&track) {
                app.sfu.relay_layers(track, *leg, max_layer);
            }
        }
        EdgeMsg::Alive => {}
    }
}

/// A relayed track on this edge: what the SFU publishes here, and its publisher at the origin.
#[derive(Clone, Debug)]
pub struct Relayed {
    pub info: TrackInfo,
    pub origin_publisher: ParticipantId,
}

/// A live this node is an edge of.
pub struct EdgeRoom {
    pub origin: String,
    /// The relayed tracks: `None` until the origin first described its stage; the sender is
    /// dropped when the link ends.
    pub tracks: watch::Receiver<Option<Vec<Relayed>>>,
    users: AtomicUsize,
    /// The relay's statistics (what arrived, lost, refused, and the delay).
    pub stats: Arc<RelayStats>,
}

impl EdgeRoom {
    /// A viewer leaves.
    pub fn release(&self) {
        self.users.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The lives this node is an edge of (`AppState::edges`).
#[derive(Default)]
pub struct Edges {
    rooms: Mutex<HashMap<String, Arc<EdgeRoom>>>,
}

impl Edges {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<EdgeRoom>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Viewers served here as an edge, and the lives they watch.
    pub fn load(&self) -> (usize, usize) {
        let map = self.map();
        let viewers = map.values().map(|e| e.users.load(Ordering::Acquire)).sum();
        (viewers, map.values().filter(|e| e.users.load(Ordering::Acquire) > 0).count())
    }

    /// The relay statistics of each live this node is an edge of.
    pub fn stats(&self) -> Vec<(String, sfu::relay::RelaySnapshot)> {
        self.map().iter().map(|(room, e)| (room.clone(), e.stats.snapshot())).collect()
    }
}

/// This node as an edge of `room`, whose live runs on `origin`: the existing relay, or a new
/// one (its link opens in the background; wait on `tracks`). The caller counts as a viewer
/// until it calls [`EdgeRoom::release`].
pub fn ensure(app: &AppState, secret: &[u8], room: &str, origin: &NodeRecord) -> Result<Arc<EdgeRoom>, AppError> {
    let live = |e: &&Arc<EdgeRoom>| e.origin == origin.id && e.tracks.has_changed().is_ok();
    {
        let map = app.edges.map();
        if let Some(e) = map.get(room).filter(live) {
            e.users.fetch_add(1, Ordering::AcqRel);
            return Ok(e.clone());
        }
    }
    // A new relay: its participant is added to the SFU with no lock held (the map's is a leaf).
    let relay = ParticipantId::next();
    let (sink, events) = sfu::event_channel(256);
    app.sfu.add_participant(relay, sink)?;
    let (tx, rx) = watch::channel(None);
    let edge =
        Arc::new(EdgeRoom { origin: origin.id.clone(), tracks: rx, users: AtomicUsize::new(1), stats: Arc::new(RelayStats::default()) });
    let raced = {
        let mut map = app.edges.map();
        match map.get(room).filter(live) {
            // Another viewer's join opened one meanwhile: use it.
            Some(e) => {
                e.users.fetch_add(1, Ordering::AcqRel);
                Some(e.clone())
            }
            None => {
                map.insert(room.to_owned(), edge.clone());
                None
            }
        }
    };
    if let Some(e) = raced {
        app.sfu.remove_participant(relay);
        return Ok(e);
    }
    let link = Link { app: app.clone(), secret: secret.to_vec(), room: room.to_owned(), origin: origin.clone(), relay, edge: edge.clone() };
    tokio::spawn(link.run(events, tx));
    Ok(edge)
}

pub type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket to another node's internal address, with `headers`.
pub async fn connect(url: &str, headers: &[(&'static str, String)]) -> Result<Upstream, AppError> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().map_err(|e| AppError::new(ErrorCode::Internal, format!("cascade: bad node URL {url}: {e}")))?;
    for (k, v) in headers {
        let value = tungstenite::http::HeaderValue::from_str(v).map_err(|_| AppError::new(ErrorCode::Internal, "cascade: a header"))?;
        req.headers_mut().insert(*k, value);
    }
    let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(1 << 20)).max_frame_size(Some(1 << 20));
    match tokio::time::timeout(CONNECT, tokio_tungstenite::connect_async_with_config(req, Some(config), true)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(AppError::new(ErrorCode::Internal, format!("cascade: {url}: {e}"))),
        Err(_) => Err(AppError::new(ErrorCode::Internal, format!("cascade: {url} did not answer within {CONNECT:?}"))),
    }
}

/// The `ws://host:port` of a node's internal address.
pub fn internal_ws(node: &NodeRecord) -> String {
    let base = node.internal_base();
    format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
}

/// An edge's link to the origin of one live.
struct Link {
    app: AppState,
    secret: Vec<u8>,
    room: String,
    origin: NodeRecord,
    /// The SFU participant that publishes the relayed tracks here.
    relay: ParticipantId,
    edge: Arc<EdgeRoom>,
}

impl Link {
    async fn run(self, mut events: sfu::Events, tx: watch::Sender<Option<Vec<Relayed>>>) {
        metrics::gauge!("onair_cascade_links", "side" => "edge").increment(1.0);
        match self.serve(&mut events, &tx).await {
            Ok(()) => tracing::info!(room = %self.room, origin = %self.origin.id, "cascade: relay link closed"),
            Err(e) => {
                metrics::counter!("onair_cascade_errors_total", "op" => "link").increment(1);
                tracing::warn!(room = %self.room, origin = %self.origin.id, "cascade: relay link failed: {e}");
            }
        }
        metrics::gauge!("onair_cascade_links", "side" => "edge").decrement(1.0);
        {
            let mut map = self.app.edges.map();
            if map.get(&self.room).is_some_and(|e| Arc::ptr_eq(e, &self.edge)) {
                map.remove(&self.room);
            }
        }
        // Its tracks end here: viewers' subscriptions to them go (and `tx` dropped tells them).
        self.app.sfu.remove_participant(self.relay);
    }

    async fn serve(&self, events: &mut sfu::Events, tx: &watch::Sender<Option<Vec<Relayed>>>) -> Result<(), AppError> {
        let media = self.app.sfu.local_addr();
        let url = format!(
            "{}/internal/v1/relay?room={}&media={media}",
            internal_ws(&self.origin),
            percent_encoding::utf8_percent_encode(&self.room, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut ws = connect(&url, &[(HEADER, sign(&self.secret, &relay_what(&self.room, media)))]).await?;
        let mut open: HashMap<TrackId, Relayed> = HashMap::new();
        let mut tick = tokio::time::interval(ALIVE);
        let mut idle_since: Option<Instant> = None;
        let mut heard = Instant::now();
        let send = |m: &EdgeMsg| tungstenite::Message::text(serde_json::to_string(m).unwrap_or_default());
        loop {
            tokio::select! {
                m = ws.next() => {
                    heard = Instant::now();
                    let text = match m {
                        Some(Ok(tungstenite::Message::Text(t))) => t,
                        Some(Ok(tungstenite::Message::Close(_))) | None => return Ok(()),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(AppError::new(ErrorCode::Internal, format!("link: {e}"))),
                    };
                    let Ok(OriginMsg::Tracks { salt, tracks }) = serde_json::from_str::<OriginMsg>(text.as_str()) else {
                        tracing::debug!(room = %self.room, "cascade: a link message refused");
                        continue;
                    };
                    let legs = self.apply(&salt, tracks, &mut open).await;
                    tx.send_replace(Some(open.values().cloned().collect()));
                    if !legs.is_empty() && ws.send(send(&EdgeMsg::Open { legs })).await.is_err() {
                        return Ok(());
                    }
                }
                ev = events.recv() => {
                    let msg = match ev {
                        Some(SfuEvent::KeyframeWanted(track, layer)) => EdgeMsg::Keyframe { track, layer },
                        Some(SfuEvent::LayersWanted(track, max_layer)) => EdgeMsg::Layers { track, max_layer },
                        Some(_) => continue,
                        None => return Ok(()),
                    };
                    if ws.send(send(&msg)).await.is_err() {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    // The origin pings every ALIVE: silence means it is gone without a word.
                    if heard.elapsed() > SILENT {
                        return Err(AppError::new(ErrorCode::Internal, "the origin fell silent"));
                    }
                    if self.edge.users.load(Ordering::Acquire) == 0 {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= LINGER && self.leave_map_if_unused() {
                            let _ = ws.close(None).await;
                            return Ok(());
                        }
                    } else {
                        idle_since = None;
                    }
                    if ws.send(send(&EdgeMsg::Alive)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Out of the map when no viewer uses the relay (checked under the map's lock, so no viewer
    /// joins a link about to close). Whether it left.
    fn leave_map_if_unused(&self) -> bool {
        let mut map = self.app.edges.map();
        if self.edge.users.load(Ordering::Acquire) != 0 {
            return false;
        }
        if map.get(&self.room).is_some_and(|e| Arc::ptr_eq(e, &self.edge)) {
            map.remove(&self.room);
        }
        true
    }

    /// Make the relayed tracks here the origin's stage: open the new ones (returning their
    /// legs), close the gone ones.
    async fn apply(&self, salt: &str, tracks: Vec<WireTrack>, open: &mut HashMap<TrackId, Relayed>) -> Vec<u32> {
        let gone: Vec<TrackId> = open.keys().filter(|t| !tracks.iter().any(|w| w.track == **t)).copied().collect();
        for t in gone {
            open.remove(&t);
            if let Err(e) = self.app.sfu.close_relay_track(self.relay, t) {
                tracing::debug!(room = %self.room, "cascade: closing a relayed track: {e}");
            }
        }
        let new: Vec<WireTrack> = tracks.into_iter().filter(|w| !open.contains_key(&w.track)).collect();
        if new.is_empty() {
            return Vec::new();
        }
        let publishers: HashMap<TrackId, ParticipantId> = new.iter().map(|w| (w.track, w.publisher)).collect();
        let legs: Vec<u32> = new.iter().map(|w| w.leg).collect();
        let asks = new
            .into_iter()
            .map(|w| RelayTrack {
                track: w.track,
                kind: w.kind,
                codec: CodecInfo { mime_type: w.mime_type, clock_rate: w.clock_rate, channels: w.channels, fmtp: w.fmtp },
                layers: w.layers,
                leg: w.leg,
                key: leg_key(&self.secret, salt, w.leg),
                stats: self.edge.stats.clone(),
            })
            .collect();
        match self.app.sfu.open_relay(self.relay, asks).await {
            Ok(infos) => {
                for info in infos {
                    let origin_publisher = publishers.get(&info.id).copied().unwrap_or(info.publisher);
                    open.insert(info.id, Relayed { info, origin_publisher });
                }
                legs
            }
            Err(e) => {
                metrics::counter!("onair_cascade_errors_total", "op" => "open").increment(1);
                tracing::warn!(room = %self.room, "cascade: relayed tracks not opened: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_hold_only_for_what_they_sign_with_the_secret_within_a_minute() {
        let s = b"a secret of the cluster, 32 bytes!";
        let v = sign(s, "relay\nr\n127.0.0.1:1");
        assert!(verify(s, "relay\nr\n127.0.0.1:1", &v));
        assert!(!verify(s, "relay\nr2\n127.0.0.1:1", &v));
        assert!(!verify(b"another secret of 32 bytes or more", "relay\nr\n127.0.0.1:1", &v));
        let old = sign_at(s, "x", unix_secs() - SIGNATURE_SECS - 5);
        assert!(!verify(s, "x", &old));
        assert!(verify(s, "x", &sign_at(s, "x", unix_secs() - SIGNATURE_SECS + 5)));
        for junk in ["", ".", "12", "abc.def", "1.zz", &format!("{}.", unix_secs())] {
            assert!(!verify(s, "x", junk), "{junk:?}");
        }
        // Leg keys differ per leg, salt and secret.
        let k = leg_key(s, "salt", 1);
        assert_ne!(k, leg_key(s, "salt", 2));
        assert_ne!(k, leg_key(s, "salt2", 1));
        assert_ne!(k, leg_key(b"another secret of 32 bytes or more", "salt", 1));
        assert_eq!(k, leg_key(s, "salt", 1));
    }
}
