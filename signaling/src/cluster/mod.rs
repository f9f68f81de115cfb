//! Many nodes: a registry of the nodes and the placement of each live, in Redis
//! (docs/architecture.md §3.9, docs/deploy.md "Many nodes").
//!
//! - **Registry.** Every `cluster.heartbeat_ms` a node writes its record (`<prefix>:node:<id>`:
//!   its URL, participants, rooms, whether it drains) with an expiry of three heartbeats, and
//!   keeps its id in the set `<prefix>:nodes`. A node that stops writing — killed, cut off — is
//!   gone from the registry when its record expires; nobody has to say so.
//! - **Placement.** A live runs on one node: `<prefix>:room:<room>` names it. The first join
//!   of a room (any door: WebSocket, WHIP, WHEP, RTMP) claims it for the node it reached
//!   (`SET NX`); a join that reaches another node is sent to the owner (`redirect`, or a 307
//!   for WHIP/WHEP). The owner renews its claims with its record, for every room it holds
//!   (open, or ended and lingering), and gives up a claim when the room closes; so a claim
//!   outlives a dead owner by at most three heartbeats, and a claim whose owner is no longer
//!   registered is taken over by the next join — the live reopens, from the shared store,
//!   where its host comes back.
//! - **A draining node** places no new live on itself: a join for a room nobody holds goes to
//!   the registered node with the fewest participants that does not drain.
//!
//! Redis unreachable: a join is served where it arrived (logged, and counted in
//! `onair_cluster_errors_total`); the rooms stay independent, so the worst case is one room
//! opened on two nodes until Redis is back, never a refused live.

pub mod cascade;
pub mod edge;
pub mod forward;

use crate::config::Config;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Renew a claim this node holds, or take it when nobody holds it. 1: renewed, 2: taken, 0:
/// another node holds it.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0";
/// Give up a claim, if it is still this node's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";
/// Take a claim over from a node that is gone (ARGV[2]), unless someone else did first.
const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end
return 0";

/// What a node says of itself in the registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// The base URL clients reach it at (`cluster.url`).
    pub url: String,
    /// Members of its rooms.
    pub participants: u64,
    pub rooms: u64,
    pub draining: bool,
    /// The base URL other nodes reach it at (`cluster.internal_url`); empty from a node of an
    /// older version (then `url`).
    #[serde(default)]
    pub internal: String,
}

impl NodeRecord {
    /// Where another node calls it: `http://host:port` (its internal URL, else its URL).
    pub fn internal_base(&self) -> &str {
        let base = if self.internal.is_empty() { &self.url } else { &self.internal };
        base.trim_end_matches('/')
    }

    /// The node's WebSocket URL: `ws(s)://host[:port]/ws`.
    pub fn ws_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}/ws"),
            None => format!("ws://{}/ws", base.strip_prefix("http://").unwrap_or(base)),
        }
    }
}

/// Where a room's live runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On this node.
    Here,
    /// On another node: send the client there.
    There(NodeRecord),
    /// Nowhere that takes it: this node drains and no other node is registered that does not.
    Nowhere,
}

/// A node's handle on the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    url: String,
    /// Where other nodes reach this one (`cluster.internal_url`).
    internal: String,
    /// The cascade's secret (`cluster.secret`; empty: no cascade).
    secret: String,
    prefix: String,
    heartbeat: Duration,
    conn: ConnectionManager,
    /// Rooms this node claimed, with when: a claim made for a join is kept one heartbeat even
    /// before its room is open. Taken alone (a leaf lock), never across an await.
    claims: Mutex<HashMap<String, Instant>>,
    /// Set by `leave`: a heartbeat still in flight must not write the record back.
    left: std::sync::atomic::AtomicBool,
    /// Calls forwarded to the node that runs a live (`forward`).
    http: reqwest::Client,
    /// The Lua scripts above, hashed once (redis-rs sends EVALSHA, and the source only when
    /// Redis does not know it yet).
    renew: redis::Script,
    release: redis::Script,
    take_over: redis::Script,
}

pub(crate) fn redis_error(what: &str, e: &redis::RedisError) {
    metrics::counter!("onair_cluster_errors_total", "op" => what.to_owned()).increment(1);
    tracing::warn!("cluster: {what}: {e}");
}

/// The host name, for a node without `cluster.node_id`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("node-{}", std::process::id()))
}

impl Cluster {
    /// Connect to Redis when `cluster.redis_url` is set (None otherwise). `http` is the HTTP
    /// listener's address, for a node without `cluster.url`.
    pub async fn connect(config: &Config, http: std::net::SocketAddr) -> anyhow::Result<Option<Cluster>> {
        let c = &config.cluster;
        if c.redis_url.is_empty() {
            return Ok(None);
        }
        let id = if c.node_id.is_empty() { host_name() } else { c.node_id.clone() };
        let listener = {
            let ip = if http.ip().is_unspecified() { config.rtc.advertise_ip } else { http.ip() };
            format!("http://{}", std::net::SocketAddr::new(ip, http.port()))
        };
        let url = if c.url.is_empty() { listener.clone() } else { c.url.trim_end_matches('/').to_owned() };
        let internal = if c.internal_url.is_empty() { listener } else { c.internal_url.trim_end_matches('/').to_owned() };
        let heartbeat = Duration::from_millis(c.heartbeat_ms);
        let client = redis::Client::open(c.redis_url.as_str()).map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(heartbeat.max(Duration::from_secs(1))));
        let conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(|e| anyhow::anyhow!("cluster: Redis at cluster.redis_url does not answer: {e}"))?;
        crate::hooks::tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Onair-Cluster/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cluster: the HTTP client: {e}"))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                http,
                renew: redis::Script::new(RENEW),
                release: redis::Script::new(RELEASE),
                take_over: redis::Script::new(TAKE_OVER),
                id,
                url,
                internal,
                secret: c.secret.clone(),
                prefix: c.key_prefix.clone(),
                heartbeat,
                conn,
                claims: Mutex::new(HashMap::new()),
                left: Default::default(),
            }),
        };
        tracing::info!(node = %cluster.id(), url = %cluster.inner.url, "cluster: registered in Redis");
        Ok(Some(cluster))
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The cascade's secret, when the cascade is on (`cluster.secret`).
    pub fn cascade_secret(&self) -> Option<&[u8]> {
        (!self.inner.secret.is_empty()).then(|| self.inner.secret.as_bytes())
    }

    /// How often the node writes its record.
    pub fn heartbeat(&self) -> Duration {
        self.inner.heartbeat
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.heartbeat.as_millis() as u64 * 3
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.inner.prefix)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.inner.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.inner.prefix)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.inner.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `room`'s live runs, claiming it for this node when nobody holds it (and this node
    /// takes new lives: `draining` false). Redis failing: here.
    pub async fn place(&self, room: &str, draining: bool) -> Placement {
        match self.try_place(room, draining).await {
            Ok(p) => p,
            Err(e) => {
                redis_error("place", &e);
                Placement::Here
            }
        }
    }

    async fn try_place(&self, room: &str, draining: bool) -> redis::RedisResult<Placement> {
        let mut conn = self.inner.conn.clone();
        let key = self.room_key(room);
        // Three rounds at most: each loses only to another node's claim made meanwhile.
        for _ in 0..3 {
            let owner: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            match owner {
                Some(owner) if owner == self.inner.id => {
                    return Ok(self.here(room));
                }
                Some(owner) => match self.node(&owner).await? {
                    Some(node) => return Ok(Placement::There(node)),
                    // Its node is gone: the live is free to move.
                    None if draining => return self.elsewhere().await,
                    None => {
                        let taken: i64 = self
                            .inner
                            .take_over
                            .key(&key)
                            .arg(&self.inner.id)
                            .arg(&owner)
                            .arg(self.ttl_ms())
                            .invoke_async(&mut conn)
                            .await?;
                        if taken == 1 {
                            tracing::info!(%room, from = %owner, "cluster: took over the live of a node that is gone");
                            return Ok(self.here(room));
                        }
                    }
                },
                None if draining => return self.elsewhere().await,
                None => {
                    let set: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&self.inner.id)
                        .arg("NX")
                        .arg("PX")
                        .arg(self.ttl_ms())
                        .query_async(&mut conn)
                        .await?;
                    if set.is_some() {
                        return Ok(self.here(room));
                    }
                }
            }
        }
        // Claims kept changing hands under us: serve it here (the renewal says if it conflicts).
        tracing::warn!(%room, "cluster: the room's placement kept changing; serving it here");
        Ok(Placement::Here)
    }

    /// `room` is this node's: noted, so the next heartbeat renews the claim.
    fn here(&self, room: &str) -> Placement {
        self.claims().insert(room.to_owned(), Instant::now());
        Placement::Here
    }

    /// The node for a new live when this one drains: the least loaded that does not drain.
    async fn elsewhere(&self) -> redis::RedisResult<Placement> {
        let best = self.nodes().await?.into_iter().filter(|n| !n.draining && n.id != self.inner.id).min_by_key(|n| n.participants);
        Ok(best.map(Placement::There).unwrap_or(Placement::Nowhere))
    }

    /// The node that runs `room`'s live when it is another registered node (None: this node,
    /// nobody, or a node that is gone). Claims nothing.
    pub async fn owner(&self, room: &str) -> redis::RedisResult<Option<NodeRecord>> {
        let mut conn = self.inner.conn.clone();
        let owner: Option<String> = redis::cmd("GET").arg(self.room_key(room)).query_async(&mut conn).await?;
        match owner {
            Some(id) if id != self.inner.id => self.node(&id).await,
            _ => Ok(None),
        }
    }

    /// A registered node's record (None once it expired).
    pub async fn node(&self, id: &str) -> redis::RedisResult<Option<NodeRecord>> {
        let mut conn = self.inner.conn.clone();
        let raw: Option<String> = redis::cmd("GET").arg(self.node_key(id)).query_async(&mut conn).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Every registered node (ids whose record expired are dropped from the set as found).
    pub async fn nodes(&self) -> redis::RedisResult<Vec<NodeRecord>> {
        let mut conn = self.inner.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.nodes_key()).query_async(&mut conn).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let raws: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, raw) in ids.iter().zip(raws) {
            match raw.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
                Some(n) => nodes.push(n),
                None => {
                    let _: i64 = redis::cmd("SREM").arg(self.nodes_key()).arg(id).query_async(&mut conn).await?;
                }
            }
        }
        Ok(nodes)
    }

    /// One heartbeat: write this node's record, renew the claims of the rooms it holds, give
    /// up those of rooms it no longer holds.
    pub async fn beat(&self, record: Load, held: Vec<String>) {
        if let Err(e) = self.try_beat(record, held).await {
            redis_error("heartbeat", &e);
        }
    }

    async fn try_beat(&self, load: Load, held: Vec<String>) -> redis::RedisResult<()> {
        if self.inner.left.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let held: std::collections::HashSet<String> = held.into_iter().collect();
        let mut conn = self.inner.conn.clone();
        let record = NodeRecord {
            id: self.inner.id.clone(),
            url: self.inner.url.clone(),
            participants: load.participants,
            rooms: load.rooms,
            draining: load.draining,
            internal: self.inner.internal.clone(),
        };
        let json = serde_json::to_string(&record).unwrap_or_default();
        redis::pipe()
            .cmd("SET")
            .arg(self.node_key(&self.inner.id))
            .arg(json)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("SADD")
            .arg(self.nodes_key())
            .arg(&self.inner.id)
            .ignore()
            .exec_async(&mut conn)
            .await?;
        let now = Instant::now();
        let (renew, release) = {
            let mut claims = self.claims();
            for room in &held {
                claims.entry(room.clone()).or_insert(now);
            }
            let grace = self.inner.heartbeat;
            let release: Vec<String> =
                claims.iter().filter(|(r, at)| !held.contains(*r) && now.duration_since(**at) > grace).map(|(r, _)| r.clone()).collect();
            for r in &release {
                claims.remove(r);
            }
            (claims.keys().cloned().collect::<Vec<_>>(), release)
        };
        for room in renew {
            let got: i64 =
                self.inner.renew.key(self.room_key(&room)).arg(&self.inner.id).arg(self.ttl_ms()).invoke_async(&mut conn).await?;
            if got == 0 {
                metrics::counter!("onair_cluster_errors_total", "op" => "conflict").increment(1);
                tracing::warn!(%room, "cluster: another node holds this room's live too (Redis was unreachable, or lost its keys)");
            }
        }
        for room in release {
            self.release(&mut conn, &room).await?;
        }
        Ok(())
    }

    /// Give up this node's claim on `room` (if it is still this node's).
    async fn release(&self, conn: &mut ConnectionManager, room: &str) -> redis::RedisResult<()> {
        let _: i64 = self.inner.release.key(self.room_key(room)).arg(&self.inner.id).invoke_async(conn).await?;
        Ok(())
    }

    /// Leave the registry (a clean stop): the record goes, and every claim is given up.
    pub async fn leave(&self) {
        self.inner.left.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut conn = self.inner.conn.clone();
        let claims: Vec<String> = self.claims().drain().map(|(r, _)| r).collect();
        let res: redis::RedisResult<()> = async {
            for room in claims {
                self.release(&mut conn, &room).await?;
            }
            redis::pipe()
                .cmd("DEL")
                .arg(self.node_key(&self.inner.id))
                .ignore()
                .cmd("SREM")
                .arg(self.nodes_key())
                .arg(&self.inner.id)
                .ignore()
                .exec_async(&mut conn)
                .await
        }
        .await;
        if let Err(e) = res {
            redis_error("leave", &e);
        }
    }
}

/// What a heartbeat says of the node's load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub participants: u64,
    pub rooms: u64,
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_gives_its_websocket_url() {
        let n =
            |url: &str| NodeRecord { id: "a".into(), url: url.into(), participants: 0, rooms: 0, draining: false, internal: String::new() };
        assert_eq!(n("http://10.0.0.1:7880").ws_url(), "ws://10.0.0.1:7880/ws");
        assert_eq!(n("https://a.live.example/").ws_url(), "wss://a.live.example/ws");
    }
}
