//! One typed configuration: embedded defaults, then a TOML file, then `ONAIR_*` environment
//! variables, then command-line flags (applied by the binary).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The secret used when none is configured. Only accepted in dev mode.
pub const DEV_SECRET: &str = "onair-dev-secret-not-for-production";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Dev mode: dev secret allowed, lobby page and ready-to-open links printed at start.
    /// Default: on when no secret is configured.
    pub dev: Option<bool>,
    /// Log filter (`RUST_LOG` syntax); `RUST_LOG` wins when set.
    pub log: String,
    pub http: HttpConfig,
    pub rtc: RtcConfig,
    pub auth: AuthConfig,
    pub room: RoomConfig,
    pub limits: LimitsConfig,
    pub rtmp: RtmpConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
    pub api: ApiConfig,
    pub commerce: CommerceConfig,
    pub admin: AdminConfig,
    pub drain: DrainConfig,
    pub schedule: ScheduleConfig,
    pub webhooks: WebhooksConfig,
    pub embed: EmbedConfig,
    pub archive: ArchiveConfig,
    pub cluster: ClusterConfig,
    /// Live profiles by name (docs/protocol.md §6.3); the built-in `interactive`, `standard`
    /// and `continuity` are kept unless redefined here.
    pub profiles: std::collections::BTreeMap<String, crate::profiles::Profile>,
}

/// The `/embed/{room}` player page (docs/whip-whep.md §3): which rooms may be embedded, in
/// which parent pages, and whether they play without a token.
///
/// ```toml
/// [embed.rooms.demo]
/// allowed_origins = ["https://shop.example", "https://www.shop.example"]
/// public = true
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// By room name; `"*"` stands for every room not named.
    pub rooms: std::collections::BTreeMap<String, EmbedRoom>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedRoom {
    /// The origins (`https://shop.example`, scheme and host, a port if not the default) whose
    /// pages may put the player in an iframe: its `Content-Security-Policy: frame-ancestors`.
    /// Empty: no page may frame it (it still opens as a page of its own).
    pub allowed_origins: Vec<String>,
    /// The room plays without a token: the player joins as an anonymous viewer
    /// (`embed:<random>`). Off: the embed's URL carries a room token (`#token=…`).
    pub public: bool,
}

impl EmbedConfig {
    /// The embed policy of `room`, if it may be embedded.
    pub fn room(&self, room: &str) -> Option<&EmbedRoom> {
        self.rooms.get(room).or_else(|| self.rooms.get("*"))
    }
}

/// Whether `origin` is a serialized origin a CSP source list can hold as it is:
/// `http(s)://host[:port]`, no path, no wildcard, nothing that would end the directive.
pub fn is_plain_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else { return false };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (rest, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The database: `sqlite:<path>` (created with its tables when missing), `sqlite::memory:`
    /// (nothing kept) or `postgres://user:password@host:5432/database` (many nodes share it; the
    /// tables are created when missing). Default: `sqlite:onair-data/onair.db`.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: "sqlite:onair-data/onair.db".into() }
    }
}

/// The live room's conversation (docs/protocol.md §13).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Longest comment, in characters (after normalisation).
    pub max_comment_chars: usize,
    /// Comments a joining participant receives.
    pub history: usize,
    /// Comments per participant: sustained per second, and the burst above it.
    pub user_comments_per_sec: f64,
    pub user_comment_burst: u32,
    /// Comments per room (everyone together): sustained per second, and the burst.
    pub room_comments_per_sec: f64,
    pub room_comment_burst: u32,
    /// Reactions one participant may send per second (more are dropped silently).
    pub user_reactions_per_sec: u32,
    /// Reactions are added up per room and sent every this many milliseconds.
    pub reaction_window_ms: u64,
    /// Comments (and deletions) are sent to a room's members every this many milliseconds, all
    /// that came in together: each viewer's connection then wakes and writes once for several.
    pub fanout_ms: u64,
    /// Longest slow mode a moderator may set, in seconds.
    pub max_slow_mode_secs: u32,
    /// Longest time-out, in minutes.
    pub max_timeout_minutes: u32,
    /// Open reports one live keeps; more are refused (`server_busy`) until moderators close some.
    pub max_open_reports: usize,
    /// A file with one blocked word or phrase per line (`#` comments): every live's list starts
    /// from it. Empty: the list built into the server (signaling/data/blocked-words.txt).
    pub blocked_words_file: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_comment_chars: 300,
            history: 50,
            user_comments_per_sec: 1.0,
            user_comment_burst: 5,
            room_comments_per_sec: 100.0,
            room_comment_burst: 200,
            user_reactions_per_sec: 20,
            reaction_window_ms: 250,
            fanout_ms: 100,
            max_slow_mode_secs: 300,
            max_timeout_minutes: 24 * 60,
            max_open_reports: 1000,
            blocked_words_file: String::new(),
        }
    }
}

/// Shutting down gently (docs/operations.md "Draining a node"): on SIGTERM the node takes no new
/// participants, tells everyone, and lets its lives run to their end for at most `max_secs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// The longest a drain waits for the lives to end (default 4 h 5 min: the duration cap and
    /// a margin). A second SIGTERM ends it at once.
    pub max_secs: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self { max_secs: 4 * 3600 + 300 }
    }
}

/// Many nodes (docs/deploy.md "Many nodes"): with `redis_url` set, the node registers itself
/// in Redis, and each live is placed on one node — the node of the live's first join; a join
/// that reaches another node is sent there (`redirect`). Empty `redis_url`: one node alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]` (`ONAIR_REDIS_URL`). Empty: no cluster.
    pub redis_url: String,
    /// This node's name in the registry, unique in the cluster (`ONAIR_NODE_ID`). Empty: the
    /// host name (a StatefulSet's pods keep theirs).
    pub node_id: String,
    /// The base URL clients reach this node at, `http(s)://host[:port]` (`ONAIR_NODE_URL`):
    /// a redirect to this node says `ws(s)://…/ws` of it. Empty: `http://` and the HTTP
    /// listener's address (with `rtc.advertise_ip` when it listens on every address).
    pub url: String,
    /// Every key this node writes starts with it (several clusters on one Redis).
    pub key_prefix: String,
    /// How often the node writes its record and keeps its rooms' placements (milliseconds).
    /// A node not heard of for three of these is gone from the registry, and the lives placed
    /// on it can be placed anew (a dead origin's live reopens, from the shared store, on the
    /// node its host joins next).
    pub heartbeat_ms: u64,
    /// The cascade's shared secret (`ONAIR_CLUSTER_SECRET`), the same on every node, at least
    /// 32 bytes. Set: a viewer who reaches a node that does not hold the live is served there
    /// (the node becomes an edge of the live: its media relayed from the live's node, sealed
    /// with keys derived from this secret; the node-to-node calls signed with it). Empty: such
    /// a viewer is redirected to the live's node.
    pub secret: String,
    /// The base URL other nodes reach this node at, `http://host:port` (`ONAIR_NODE_INTERNAL_URL`):
    /// the cascade's links between nodes use it. Empty: the HTTP listener's address (with
    /// `rtc.advertise_ip` when it listens on every address).
    pub internal_url: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            node_id: String::new(),
            url: String::new(),
            key_prefix: "onair".into(),
            heartbeat_ms: 2000,
            secret: String::new(),
            internal_url: String::new(),
        }
    }
}

/// The admin listener: `/metrics`, and the operator dashboard behind `token` (docs/operations.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Keep it on loopback or a cluster-internal address: it is not for the public.
    pub bind: SocketAddr,
    /// The dashboard's credential (`Authorization: Bearer`), at least 16 bytes. Empty: the
    /// dashboard is open in dev mode and refused otherwise; `/metrics` never asks.
    pub token: String,
    /// OTLP trace export (docs/operations.md "Traces"): an `http://host:4318` collector base URL.
    /// Empty: `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else no export.
    pub otlp_endpoint: String,
    /// Share of traces kept (0..=1).
    pub trace_sample_ratio: f64,
    /// Keep the media plane's per-packet figures (forwarding delay, bytes in). Off only to
    /// measure their cost (`ONAIR_MEDIA_METRICS=false`).
    pub media_metrics: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7881),
            token: String::new(),
            otlp_endpoint: String::new(),
            trace_sample_ratio: 0.1,
            media_metrics: true,
        }
    }
}

/// The server API under `/api/v1` (docs/api.md): what the platform's backend calls.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The bearer key of the server API (`Authorization: Bearer <key>`), at least 16 bytes.
    /// Empty: only room tokens of hosts and moderators reach the API (their own room's routes).
    pub key: String,
}

/// A supporter badge's tier (docs/api.md, payments).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    /// The price in the currency's minor unit (cents).
    pub price_minor: i64,
}

/// Supporter badges and product pins (issue #15).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommerceConfig {
    /// The three badge tiers, cheapest first.
    pub tiers: Vec<TierConfig>,
    /// ISO 4217 code of the tiers' prices.
    pub currency: String,
    /// The HMAC-SHA256 secret of the payment webhook (`POST /api/v1/payments`). Empty: the
    /// webhook answers 503 and no badge can be granted.
    pub webhook_secret: String,
    /// How far a webhook's signed timestamp may be from our clock, in seconds (replays older
    /// than this are refused; newer ones are caught by the payment id).
    pub webhook_tolerance_secs: u64,
    /// Products one room's catalog holds.
    pub max_products: usize,
    /// Largest product image upload, in bytes.
    pub max_image_bytes: usize,
}

impl Default for CommerceConfig {
    fn default() -> Self {
        Self {
            tiers: vec![
                TierConfig { name: "Supporter".into(), price_minor: 99 },
                TierConfig { name: "Fan".into(), price_minor: 299 },
                TierConfig { name: "Superfan".into(), price_minor: 499 },
            ],
            currency: "USD".into(),
            webhook_secret: String::new(),
            webhook_tolerance_secs: 300,
            max_products: 100,
            max_image_bytes: 512 * 1024,
        }
    }
}

/// Scheduled lives (docs/api.md "Scheduled lives").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// How far ahead a live may be scheduled, in days.
    pub max_days_ahead: u32,
    /// Upcoming (not started, not cancelled) lives one room may have.
    pub max_per_room: usize,
    /// Largest banner image upload, in bytes.
    pub max_banner_bytes: usize,
    /// Minutes before the start when subscribers get the early reminder.
    pub reminder_minutes: u32,
    /// A scheduled live links to the room's live when its host goes live this many minutes
    /// before its start, or up to `late_minutes` after it (or at any time through `start`).
    pub early_minutes: u32,
    pub late_minutes: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            max_days_ahead: 90,
            max_per_room: 50,
            max_banner_bytes: 2 * 1024 * 1024,
            reminder_minutes: 15,
            early_minutes: 30,
            late_minutes: 120,
        }
    }
}

/// Recording and the archive (docs/api.md "Archive"): every live is recorded unless `record`
/// is off — one fragmented MP4 per publisher, written as packets arrive — and after it ends
/// ffmpeg builds the one video of the stage; entries go after `retention_secs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Record lives (`ONAIR_ARCHIVE_RECORD`).
    pub record: bool,
    /// Where recordings are written, a folder per archive entry (`ONAIR_ARCHIVE_DIR`).
    pub dir: String,
    /// How long an entry and its files are kept, in seconds (`ONAIR_ARCHIVE_RETENTION_SECS`;
    /// default 30 days).
    pub retention_secs: u64,
    /// How often the sweeper looks for expired entries, in seconds (`ONAIR_ARCHIVE_SWEEP_SECS`).
    pub sweep_secs: u64,
    /// The ffmpeg that builds the stage video (`ONAIR_FFMPEG`); empty: keep the raw files only.
    pub ffmpeg: String,
    /// The stage video's size (width × height; tiles are laid out in it as on the page).
    pub video_width: u32,
    pub video_height: u32,
    /// How long a signed download link stays valid, in seconds.
    pub link_secs: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            record: true,
            dir: "onair-data/archive".into(),
            retention_secs: 30 * 24 * 3600,
            sweep_secs: 600,
            ffmpeg: "ffmpeg".into(),
            video_width: 1280,
            video_height: 720,
            link_secs: 6 * 3600,
        }
    }
}

/// Outgoing webhooks (docs/api.md "Webhooks"), signed as Standard Webhooks do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events are POSTed (`http://` or `https://`). Empty: no webhooks.
    pub url: String,
    /// The signing secret: `whsec_<base64>` as Standard Webhooks libraries expect, or any
    /// text of at least 24 bytes (its UTF-8 bytes are the key).
    pub secret: String,
    /// The events sent. Default: every event but `participant_joined`/`participant_left`.
    pub events: Vec<String>,
    /// Delays before each retry of a failed delivery, in seconds (its length + 1 attempts).
    pub retry_delays_secs: Vec<f64>,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// Days the delivery log keeps a finished delivery.
    pub log_days: u32,
}

/// Every webhook event there is.
pub const WEBHOOK_EVENTS: [&str; 10] = [
    "live_scheduled",
    "live_updated",
    "live_cancelled",
    "live_reminder",
    "live_started",
    "live_ended",
    "recording_ready",
    "participant_joined",
    "participant_left",
    "test",
];

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            events: WEBHOOK_EVENTS.iter().filter(|e| !e.starts_with("participant_")).map(|e| e.to_string()).collect(),
            retry_delays_secs: vec![5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0],
            timeout_secs: 10,
            log_days: 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Accept studio feeds (OBS, ffmpeg) over RTMP.
    pub enabled: bool,
    /// RTMP listener.
    pub bind: SocketAddr,
    /// The application name in the publishing URL (`rtmp://host:1935/<app>`).
    pub app: String,
    /// The server URL shown to hosts with a new key (default: built from `bind`).
    pub public_url: String,
    /// Where an older Onair kept stream-key hashes: imported into the store on start, then
    /// renamed `<file>.imported`. Empty: nothing to import.
    pub keys_file: String,
    /// Seconds a dropped encoder's seat and tracks are held for its reconnect.
    pub grace_secs: u64,
    /// Largest RTMP chunk size a peer may announce (bytes); larger is refused.
    pub max_chunk_size: u32,
    /// Largest RTMP message (bytes), e.g. one key frame; larger is refused.
    pub max_message_bytes: u32,
    /// Longest stream key / app name accepted (bytes).
    pub max_name_bytes: usize,
    /// Simultaneous RTMP connections (publishing or still handshaking).
    pub max_connections: usize,
    /// Seconds an RTMP connection may take from TCP accept to an accepted publish.
    pub handshake_timeout_secs: u64,
    /// Seconds without any data before a publishing connection is dropped.
    pub idle_timeout_secs: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1935),
            app: "live".into(),
            public_url: String::new(),
            keys_file: "onair-data/stream-keys.json".into(),
            grace_secs: 60,
            max_chunk_size: 65_536,
            max_message_bytes: 4 * 1024 * 1024,
            max_name_bytes: 256,
            max_connections: 32,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 20,
        }
    }
}

impl RtmpConfig {
    /// The publishing URL a host types into OBS.
    pub fn server_url(&self) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.clone();
        }
        let host = if self.bind.ip().is_unspecified() { "localhost".to_owned() } else { self.bind.ip().to_string() };
        format!("rtmp://{host}:{}/{}", self.bind.port(), self.app)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// HTTP + WebSocket listener.
    pub bind: SocketAddr,
    /// The niceness of the signaling threads (HTTP, WebSockets, the conversation's fan-out, the
    /// store), 0..=19: the media threads keep the default, so when they share a core the media
    /// wins it and a burst of chat writes does not delay packets (docs/benchmarks.md, issue
    /// 11). 0 treats both alike. `ONAIR_HTTP_THREAD_NICE`.
    pub thread_nice: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// The one UDP port for all media.
    pub udp_bind: SocketAddr,
    /// Address advertised in ICE candidates (the public IP in production).
    pub advertise_ip: IpAddr,
    /// Media worker threads; 0 = one per core.
    pub workers: usize,
    /// Minimum interval between PLIs sent to a publisher for one track, in ms.
    pub pli_throttle_ms: u64,
    /// A viewer who connects starts from the picture a layer is at, when its keyframe arrived
    /// at most this long ago, instead of asking the publisher for a new one; 0 = off, in ms.
    pub keyframe_cache_ms: u64,
    /// Viewers' forwarded media takes the SFU's own send path (header written once, SRTP sealed
    /// in place, no interceptor chain); `false` sends it through rtc's (for comparison).
    pub lean_send_path: bool,
    /// Where each viewer's bandwidth estimate starts before feedback corrects it, kbit/s.
    pub initial_estimate_kbps: u64,
    /// The highest a viewer's estimate may climb, kbit/s.
    pub max_estimate_kbps: u64,
    /// How long a higher simulcast layer must fit a viewer's estimate before it climbs, in ms.
    pub layer_up_hold_ms: u64,
    /// A layer fits for climbing when its rate × this ≤ the viewer's budget (≥ 1.0).
    pub layer_up_headroom: f64,
    /// Audio-only fallback (live profiles with `audio_only_fallback`): a viewer's video pauses
    /// after its estimate stayed below its lowest layers this long, in ms…
    pub fallback_enter_ms: u64,
    /// …and resumes after the estimate showed room for them × `fallback_headroom` this long.
    pub fallback_leave_ms: u64,
    pub fallback_headroom: f64,
    /// Real-time scheduling for the media threads: SCHED_RR at this priority (1..=99), so they
    /// take a core from signaling's threads at once (docs/operations.md "CPU"). 0 (the
    /// default) leaves them on the normal scheduler. Needs CAP_SYS_NICE. `ONAIR_RTC_REALTIME_PRIORITY`.
    pub realtime_priority: u8,
    /// STUN/TURN servers WHIP and WHEP clients are told of (`Link: <…>; rel="ice-server"`, RFC
    /// 9725 §4.6). None by default: clients reach the UDP port directly.
    pub ice_servers: Vec<IceServer>,
}

/// A STUN or TURN server for WHIP/WHEP clients.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN credentials (`credential-type="password"`).
    pub username: String,
    pub credential: String,
}

impl IceServer {
    /// The `Link` header values for this server (one per URL).
    pub fn links(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if !self.username.is_empty() {
                    link.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        self.username, self.credential
                    ));
                }
                link
            })
            .collect()
    }

    fn check(&self) -> anyhow::Result<()> {
        let plain = |v: &str| v.bytes().all(|b| b.is_ascii_graphic() && !b"\"<>,;\\".contains(&b));
        if self.urls.is_empty() {
            anyhow::bail!("rtc.ice_servers: a server without urls");
        }
        for url in &self.urls {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"].iter().any(|s| url.starts_with(s));
            // `?transport=udp` is part of a TURN URL (RFC 7065); `;`, `,`, `<>` and quotes would
            // break the header.
            if !scheme_ok || url.len() > 512 || !url.bytes().all(|b| b.is_ascii_graphic() && !b"\"<>,; ".contains(&b)) {
                anyhow::bail!("rtc.ice_servers: {url:?} is not a stun:, stuns:, turn: or turns: URL");
            }
        }
        if !(plain(&self.username) && plain(&self.credential)) || self.username.len() > 256 || self.credential.len() > 256 {
            anyhow::bail!(
                "rtc.ice_servers: username and credential must be printable, without quotes, <>, commas, semicolons or backslashes"
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret for tokens. Empty = dev secret (dev mode only).
    pub secret: String,
    /// HS256, HS384 or HS512.
    pub algorithm: String,
    /// Clock skew tolerated on exp/nbf, in seconds.
    pub leeway_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Publishing participants (host + co-hosts) per room; at most 4.
    pub max_publishers: usize,
    /// Participants per room (viewers included).
    pub max_participants: usize,
    /// A room nobody is in is closed after this many seconds.
    pub empty_timeout_secs: u64,
    /// After an ended live's room closed, its name refuses everyone but the host with
    /// `room_ended` this many seconds (a reload hears that the live ended).
    pub ended_linger_secs: u64,
    /// A live is ended after this many seconds (0 = no cap). Default: 4 hours.
    pub max_duration_secs: u64,
    /// Warnings to the stage this many seconds before the cap (default 15, 5 and 1 minutes).
    pub end_warnings_secs: Vec<u64>,
    /// When the host drops, the live is held this many seconds for the host's return (0 = not
    /// held: the live goes on without the host, as before).
    pub host_grace_secs: u64,
    /// The profile of a live whose host's token names none.
    pub profile: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Burst allowance above the sustained rate.
    pub message_burst: u32,
    /// Seconds a new connection has to send `join`.
    pub join_timeout_secs: u64,
    /// Seconds of silence (no message, no pong) before a connection is dropped.
    pub idle_timeout_secs: u64,
    /// Room messages (broadcasts, the conversation) queued for one connection. When they do not
    /// fit, the rest are dropped and the client gets a `resync` (docs/protocol.md §3.5).
    pub outbox_messages: usize,
    /// Resyncs one connection may need within a minute; one more closes it (4008, too slow).
    pub max_resyncs_per_minute: u32,
    /// Seconds a write to the client may wait for it to read before the connection is cut.
    pub write_timeout_secs: u64,
    /// Seconds a participant whose connection dropped (without `leave`) keeps its place for a
    /// resume (`join.resume`); 0 turns resuming off (a drop leaves at once).
    pub resume_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dev: None,
            // rtc_dtls warns about every TLS extension a browser offers that it does not use.
            log: "info,rtc_dtls=error".into(),
            http: HttpConfig::default(),
            rtc: RtcConfig::default(),
            auth: AuthConfig::default(),
            room: RoomConfig::default(),
            limits: LimitsConfig::default(),
            rtmp: RtmpConfig::default(),
            store: StoreConfig::default(),
            chat: ChatConfig::default(),
            api: ApiConfig::default(),
            admin: AdminConfig::default(),
            drain: DrainConfig::default(),
            commerce: CommerceConfig::default(),
            schedule: ScheduleConfig::default(),
            webhooks: WebhooksConfig::default(),
            embed: EmbedConfig::default(),
            archive: ArchiveConfig::default(),
            cluster: ClusterConfig::default(),
            profiles: crate::profiles::builtin(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880), thread_nice: 10 }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7882),
            advertise_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            workers: 0,
            pli_throttle_ms: 500,
            keyframe_cache_ms: 500,
            lean_send_path: true,
            initial_estimate_kbps: 2_500,
            max_estimate_kbps: 50_000,
            layer_up_hold_ms: 2_000,
            layer_up_headroom: 1.25,
            fallback_enter_ms: 3_000,
            fallback_leave_ms: 2_000,
            fallback_headroom: 1.25,
            realtime_priority: 0,
            ice_servers: Vec::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { secret: String::new(), algorithm: "HS256".into(), leeway_secs: 5 }
    }
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            max_publishers: 4,
            max_participants: 10_000,
            empty_timeout_secs: 300,
            ended_linger_secs: 10,
            max_duration_secs: 4 * 3600,
            end_warnings_secs: vec![15 * 60, 5 * 60, 60],
            host_grace_secs: 300,
            profile: "standard".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            messages_per_second: 50,
            message_burst: 100,
            join_timeout_secs: 10,
            idle_timeout_secs: 60,
            outbox_messages: 512,
            max_resyncs_per_minute: 3,
            write_timeout_secs: 10,
            resume_grace_secs: 15,
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        // Profiles named in the file add to (or redefine) the built-in families.
        for (name, p) in crate::profiles::builtin() {
            config.profiles.entry(name).or_insert(p);
        }
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Overrides from `ONAIR_*` variables (`get` is `std::env::var` outside tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn parse<T: std::str::FromStr>(key: &str, v: String) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| anyhow::anyhow!("{key}={v}: {e}"))
        }
        if let Some(v) = get("ONAIR_DEV") {
            self.dev = Some(parse("ONAIR_DEV", v)?);
        }
        if let Some(v) = get("ONAIR_LOG") {
            self.log = v;
        }
        if let Some(v) = get("ONAIR_RTC_REALTIME_PRIORITY") {
            self.rtc.realtime_priority = parse("ONAIR_RTC_REALTIME_PRIORITY", v)?;
        }
        if let Some(v) = get("ONAIR_HTTP_THREAD_NICE") {
            self.http.thread_nice = parse("ONAIR_HTTP_THREAD_NICE", v)?;
        }
        if let Some(v) = get("ONAIR_HTTP_BIND") {
            self.http.bind = parse("ONAIR_HTTP_BIND", v)?;
        }
        if let Some(v) = get("ONAIR_RTC_UDP_BIND") {
            self.rtc.udp_bind = parse("ONAIR_RTC_UDP_BIND", v)?;
        }
        if let Some(v) = get("ONAIR_RTC_ADVERTISE_IP") {
            self.rtc.advertise_ip = parse("ONAIR_RTC_ADVERTISE_IP", v)?;
        }
        if let Some(v) = get("ONAIR_RTC_WORKERS") {
            self.rtc.workers = parse("ONAIR_RTC_WORKERS", v)?;
        }
        if let Some(v) = get("ONAIR_RTC_KEYFRAME_CACHE_MS") {
            self.rtc.keyframe_cache_ms = parse("ONAIR_RTC_KEYFRAME_CACHE_MS", v)?;
        }
        if let Some(v) = get("ONAIR_RTC_LEAN_SEND_PATH") {
            self.rtc.lean_send_path = parse("ONAIR_RTC_LEAN_SEND_PATH", v)?;
        }
        if let Some(v) = get("ONAIR_AUTH_SECRET") {
            self.auth.secret = v;
        }
        if let Some(v) = get("ONAIR_RTMP_ENABLED") {
            self.rtmp.enabled = parse("ONAIR_RTMP_ENABLED", v)?;
        }
        if let Some(v) = get("ONAIR_RTMP_BIND") {
            self.rtmp.bind = parse("ONAIR_RTMP_BIND", v)?;
        }
        if let Some(v) = get("ONAIR_RTMP_KEYS_FILE") {
            self.rtmp.keys_file = v;
        }
        if let Some(v) = get("ONAIR_STORE_URL") {
            self.store.url = v;
        }
        if let Some(v) = get("ONAIR_REDIS_URL") {
            self.cluster.redis_url = v;
        }
        if let Some(v) = get("ONAIR_NODE_ID") {
            self.cluster.node_id = v;
        }
        if let Some(v) = get("ONAIR_NODE_URL") {
            self.cluster.url = v;
        }
        if let Some(v) = get("ONAIR_CLUSTER_SECRET") {
            self.cluster.secret = v;
        }
        if let Some(v) = get("ONAIR_NODE_INTERNAL_URL") {
            self.cluster.internal_url = v;
        }
        if let Some(v) = get("ONAIR_CLUSTER_HEARTBEAT_MS") {
            self.cluster.heartbeat_ms = parse("ONAIR_CLUSTER_HEARTBEAT_MS", v)?;
        }
        if let Some(v) = get("ONAIR_ADMIN_BIND") {
            self.admin.bind = parse("ONAIR_ADMIN_BIND", v)?;
        }
        if let Some(v) = get("ONAIR_IDLE_TIMEOUT_SECS") {
            self.limits.idle_timeout_secs = parse("ONAIR_IDLE_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("ONAIR_RESUME_GRACE_SECS") {
            self.limits.resume_grace_secs = parse("ONAIR_RESUME_GRACE_SECS", v)?;
        }
        if let Some(v) = get("ONAIR_OUTBOX_MESSAGES") {
            self.limits.outbox_messages = parse("ONAIR_OUTBOX_MESSAGES", v)?;
        }
        if let Some(v) = get("ONAIR_DRAIN_MAX_SECS") {
            self.drain.max_secs = parse("ONAIR_DRAIN_MAX_SECS", v)?;
        }
        if let Some(v) = get("ONAIR_MEDIA_METRICS") {
            self.admin.media_metrics = parse("ONAIR_MEDIA_METRICS", v)?;
        }
        if let Some(v) = get("ONAIR_ADMIN_TOKEN") {
            self.admin.token = v;
        }
        if let Some(v) = get("ONAIR_API_KEY") {
            self.api.key = v;
        }
        if let Some(v) = get("ONAIR_COMMERCE_WEBHOOK_SECRET") {
            self.commerce.webhook_secret = v;
        }
        if let Some(v) = get("ONAIR_WEBHOOK_URL") {
            self.webhooks.url = v;
        }
        if let Some(v) = get("ONAIR_WEBHOOK_SECRET") {
            self.webhooks.secret = v;
        }
        if let Some(v) = get("ONAIR_ARCHIVE_RECORD") {
            self.archive.record = parse("ONAIR_ARCHIVE_RECORD", v)?;
        }
        if let Some(v) = get("ONAIR_ARCHIVE_DIR") {
            self.archive.dir = v;
        }
        if let Some(v) = get("ONAIR_ARCHIVE_RETENTION_SECS") {
            self.archive.retention_secs = parse("ONAIR_ARCHIVE_RETENTION_SECS", v)?;
        }
        if let Some(v) = get("ONAIR_ARCHIVE_SWEEP_SECS") {
            self.archive.sweep_secs = parse("ONAIR_ARCHIVE_SWEEP_SECS", v)?;
        }
        if let Some(v) = get("ONAIR_FFMPEG") {
            self.archive.ffmpeg = v;
        }
        if let Some(v) = get("ONAIR_ROOM_EMPTY_TIMEOUT_SECS") {
            self.room.empty_timeout_secs = parse("ONAIR_ROOM_EMPTY_TIMEOUT_SECS", v)?;
        }
        Ok(())
    }

    /// Whether dev mode is on (explicitly, or implicitly because no secret is set).
    pub fn dev_mode(&self) -> bool {
        self.dev.unwrap_or(self.auth.secret.is_empty())
    }

    /// The signing secret in force; fails outside dev mode when none is configured.
    pub fn secret(&self) -> anyhow::Result<String> {
        if !self.auth.secret.is_empty() {
            return Ok(self.auth.secret.clone());
        }
        if self.dev_mode() {
            return Ok(DEV_SECRET.to_owned());
        }
        anyhow::bail!("auth.secret (or ONAIR_AUTH_SECRET) must be set when dev mode is off")
    }

    /// Checks that span fields.
    pub fn validate(&self) -> anyhow::Result<()> {
        let c = &self.cluster;
        if !c.redis_url.is_empty() {
            if !(c.redis_url.starts_with("redis://") || c.redis_url.starts_with("rediss://")) {
                anyhow::bail!("cluster.redis_url must be redis://… or rediss://…");
            }
            if !(200..=60_000).contains(&c.heartbeat_ms) {
                anyhow::bail!("cluster.heartbeat_ms must be 200..=60000");
            }
            if c.key_prefix.is_empty() || c.key_prefix.len() > 64 || c.node_id.len() > 128 {
                anyhow::bail!("cluster.key_prefix must be 1-64 bytes and cluster.node_id at most 128");
            }
            let web = c.url.is_empty() || c.url.starts_with("http://") || c.url.starts_with("https://");
            if !web {
                anyhow::bail!("cluster.url must be http://… or https://… (the base URL clients reach this node at)");
            }
            if !c.secret.is_empty() && c.secret.len() < 32 {
                anyhow::bail!("cluster.secret must be at least 32 bytes (or empty: no cascade)");
            }
            if !(c.internal_url.is_empty() || c.internal_url.starts_with("http://")) {
                anyhow::bail!("cluster.internal_url must be http://host:port (how other nodes reach this one)");
            }
        }
        if self.rtc.realtime_priority > 99 {
            anyhow::bail!("rtc.realtime_priority must be 0..=99");
        }
        if !(0..=19).contains(&self.http.thread_nice) {
            anyhow::bail!("http.thread_nice must be 0..=19");
        }
        let a = &self.archive;
        if a.record && a.dir.trim().is_empty() {
            anyhow::bail!("archive.dir must name a folder when archive.record is on");
        }
        if a.retention_secs == 0 || a.sweep_secs == 0 || a.link_secs == 0 {
            anyhow::bail!("archive.retention_secs, archive.sweep_secs and archive.link_secs must be at least 1");
        }
        if !(160..=3840).contains(&a.video_width)
            || !(90..=2160).contains(&a.video_height)
            || a.video_width % 2 == 1
            || a.video_height % 2 == 1
        {
            anyhow::bail!("archive.video_width must be an even 160..=3840 and archive.video_height an even 90..=2160");
        }
        if self.room.max_publishers == 0 || self.room.max_publishers > 4 {
            anyhow::bail!("room.max_publishers must be 1..=4 (the stage holds four)");
        }
        crate::auth::parse_algorithm(&self.auth.algorithm)?;
        if self.limits.resume_grace_secs > 600 {
            anyhow::bail!("limits.resume_grace_secs must be at most 600");
        }
        if self.limits.outbox_messages < 16 || self.limits.write_timeout_secs == 0 {
            anyhow::bail!("limits.outbox_messages must be at least 16 and limits.write_timeout_secs at least 1");
        }
        if self.limits.max_message_bytes < 1024 {
            anyhow::bail!("limits.max_message_bytes must be at least 1024");
        }
        if !(128..=16 * 1024 * 1024).contains(&self.rtmp.max_chunk_size) {
            anyhow::bail!("rtmp.max_chunk_size must be 128..=16777216");
        }
        if self.rtmp.max_message_bytes < 64 * 1024 {
            anyhow::bail!("rtmp.max_message_bytes must be at least 65536");
        }
        if self.rtmp.app.is_empty() || self.rtmp.app.contains('/') {
            anyhow::bail!("rtmp.app must be a non-empty name without '/'");
        }
        if !(100..=1_000_000).contains(&self.rtc.max_estimate_kbps)
            || !(100..=self.rtc.max_estimate_kbps).contains(&self.rtc.initial_estimate_kbps)
        {
            anyhow::bail!("rtc.initial_estimate_kbps and rtc.max_estimate_kbps must be 100..=1000000, initial ≤ max");
        }
        if !(1.0..=4.0).contains(&self.rtc.layer_up_headroom) {
            anyhow::bail!("rtc.layer_up_headroom must be 1.0..=4.0");
        }
        if self.rtc.keyframe_cache_ms > 2_000 {
            anyhow::bail!("rtc.keyframe_cache_ms must be 0..=2000 (a viewer's start is sent at once)");
        }
        if !(500..=60_000).contains(&self.rtc.fallback_enter_ms)
            || !(500..=60_000).contains(&self.rtc.fallback_leave_ms)
            || !(1.0..=4.0).contains(&self.rtc.fallback_headroom)
        {
            anyhow::bail!("rtc.fallback_enter_ms and fallback_leave_ms must be 500..=60000, fallback_headroom 1.0..=4.0");
        }
        if self.rtc.layer_up_hold_ms > 60_000 {
            anyhow::bail!("rtc.layer_up_hold_ms must be at most 60000");
        }
        for (name, p) in &self.profiles {
            crate::profiles::validate(name, p)?;
        }
        for server in &self.rtc.ice_servers {
            server.check()?;
        }
        for (room, e) in &self.embed.rooms {
            if let Some(bad) = e.allowed_origins.iter().find(|o| !is_plain_origin(o)) {
                anyhow::bail!("embed.rooms.{room}.allowed_origins: {bad:?} is not an origin like https://shop.example");
            }
        }
        if !self.profiles.contains_key(&self.room.profile) {
            anyhow::bail!(
                "room.profile {:?} is not a profile (profiles: {:?})",
                self.room.profile,
                self.profiles.keys().collect::<Vec<_>>()
            );
        }
        if crate::store::Backend::of(&self.store.url).is_none() {
            anyhow::bail!("store.url must be sqlite:<path>, sqlite::memory: or postgres://user:password@host/database");
        }
        let chat = &self.chat;
        if !(1..=5000).contains(&chat.max_comment_chars) || chat.history > 500 || chat.max_slow_mode_secs > 3600 {
            anyhow::bail!("chat: max_comment_chars 1..=5000, history ≤ 500, max_slow_mode_secs ≤ 3600");
        }
        if !(chat.user_comments_per_sec > 0.0 && chat.room_comments_per_sec > 0.0)
            || chat.user_comment_burst == 0
            || chat.room_comment_burst == 0
        {
            anyhow::bail!("chat: comment rates and bursts must be positive");
        }
        if !(1..=1000).contains(&chat.fanout_ms) {
            anyhow::bail!("chat.fanout_ms must be 1..=1000");
        }
        if !(50..=5000).contains(&chat.reaction_window_ms) || chat.user_reactions_per_sec == 0 || chat.max_timeout_minutes == 0 {
            anyhow::bail!("chat: reaction_window_ms 50..=5000, user_reactions_per_sec and max_timeout_minutes ≥ 1");
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            anyhow::bail!("admin.token must be at least 16 bytes (or empty)");
        }
        if !(0.0..=1.0).contains(&self.admin.trace_sample_ratio) {
            anyhow::bail!("admin.trace_sample_ratio must be 0..=1");
        }
        if !self.api.key.is_empty() && self.api.key.len() < 16 {
            anyhow::bail!("api.key must be at least 16 bytes (or empty: no server key)");
        }
        let c = &self.commerce;
        if c.tiers.len() != 3 || c.tiers.iter().any(|t| t.name.trim().is_empty() || t.name.chars().count() > 32 || t.price_minor <= 0) {
            anyhow::bail!("commerce.tiers: exactly three tiers, each a name of 1-32 characters and a positive price_minor");
        }
        if !crate::live::commerce::catalog::is_currency(&c.currency) {
            anyhow::bail!("commerce.currency must be an ISO 4217 code such as USD");
        }
        if !c.webhook_secret.is_empty() && c.webhook_secret.len() < 16 {
            anyhow::bail!("commerce.webhook_secret must be at least 16 bytes (or empty: payments off)");
        }
        if !(10..=3600).contains(&c.webhook_tolerance_secs)
            || !(1..=10_000).contains(&c.max_products)
            || !(1024..=16 * 1024 * 1024).contains(&c.max_image_bytes)
        {
            anyhow::bail!("commerce: webhook_tolerance_secs 10..=3600, max_products 1..=10000, max_image_bytes 1024..=16777216");
        }
        let sc = &self.schedule;
        if !(1..=366).contains(&sc.max_days_ahead)
            || !(1..=1000).contains(&sc.max_per_room)
            || !(1024..=16 * 1024 * 1024).contains(&sc.max_banner_bytes)
            || !(1..=24 * 60).contains(&sc.reminder_minutes)
            || sc.early_minutes > 24 * 60
            || sc.late_minutes > 24 * 60
        {
            anyhow::bail!(
                "schedule: max_days_ahead 1..=366, max_per_room 1..=1000, max_banner_bytes 1024..=16777216, reminder_minutes 1..=1440, early/late_minutes ≤ 1440"
            );
        }
        crate::hooks::validate(&self.webhooks)?;
        self.secret()?;
        Ok(())
    }

    pub fn sfu_config(&self) -> sfu::SfuConfig {
        sfu::SfuConfig {
            bind: self.rtc.udp_bind,
            advertise_ip: self.rtc.advertise_ip,
            workers: self.rtc.workers,
            pli_throttle: Duration::from_millis(self.rtc.pli_throttle_ms),
            keyframe_cache: Duration::from_millis(self.rtc.keyframe_cache_ms),
            lean_send_path: self.rtc.lean_send_path,
            layers: sfu::LayerPolicy {
                up_hold: Duration::from_millis(self.rtc.layer_up_hold_ms),
                up_headroom: self.rtc.layer_up_headroom,
                initial_estimate_bps: self.rtc.initial_estimate_kbps as f64 * 1000.0,
                max_estimate_bps: self.rtc.max_estimate_kbps as f64 * 1000.0,
            },
            fallback: sfu::FallbackPolicy {
                enter: Duration::from_millis(self.rtc.fallback_enter_ms),
                leave_hold: Duration::from_millis(self.rtc.fallback_leave_ms),
                headroom: self.rtc.fallback_headroom,
            },
            realtime_priority: self.rtc.realtime_priority,
            ..sfu::SfuConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_and_their_edges() {
        let mut c = Config::default();
        c.validate().unwrap();
        let env = |k: &str| match k {
            "ONAIR_REDIS_URL" => Some("redis://127.0.0.1:6379".to_string()),
            "ONAIR_NODE_ID" => Some("node-7".to_string()),
            "ONAIR_NODE_URL" => Some("https://n7.live.example".to_string()),
            "ONAIR_CLUSTER_HEARTBEAT_MS" => Some("200".to_string()),
            "ONAIR_CLUSTER_SECRET" => Some("s".repeat(32)),
            "ONAIR_NODE_INTERNAL_URL" => Some("http://10.1.2.3:7880".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(
            (c.cluster.node_id.as_str(), c.cluster.url.as_str(), c.cluster.heartbeat_ms),
            ("node-7", "https://n7.live.example", 200)
        );
        c.validate().unwrap();
        let refused = |edit: &dyn Fn(&mut ClusterConfig)| {
            let mut bad = c.clone();
            edit(&mut bad.cluster);
            bad.validate().is_err()
        };
        assert!(refused(&|k| k.heartbeat_ms = 199));
        assert!(refused(&|k| k.heartbeat_ms = 60_001));
        assert!(!refused(&|k| k.heartbeat_ms = 60_000));
        assert!(refused(&|k| k.redis_url = "http://127.0.0.1:6379".into()));
        assert!(refused(&|k| k.url = "n7.live.example".into()));
        assert!(refused(&|k| k.key_prefix = String::new()));
        assert!(refused(&|k| k.node_id = "n".repeat(129)));
        assert_eq!((c.cluster.secret.len(), c.cluster.internal_url.as_str()), (32, "http://10.1.2.3:7880"));
        assert!(refused(&|k| k.secret = "s".repeat(31)));
        assert!(!refused(&|k| k.secret = String::new()));
        assert!(refused(&|k| k.internal_url = "https://10.1.2.3".into()));
        // Without Redis nothing of it is checked: a node alone.
        assert!(!refused(&|k| *k = ClusterConfig { heartbeat_ms: 0, ..Default::default() }));
    }

    #[test]
    fn file_then_env() {
        let mut c: Config = toml::from_str("[http]\nbind = \"127.0.0.1:9000\"\n[auth]\nsecret = \"s\"\n").unwrap();
        assert_eq!(c.http.bind.port(), 9000);
        assert!(!c.dev_mode());
        c.apply_env(|k| (k == "ONAIR_HTTP_BIND").then(|| "127.0.0.1:9100".to_string())).unwrap();
        assert_eq!(c.http.bind.port(), 9100);
        assert!(c.apply_env(|k| (k == "ONAIR_RTC_WORKERS").then(|| "many".to_string())).is_err());
        assert!(c.apply_env(|k| (k == "ONAIR_RTC_KEYFRAME_CACHE_MS").then(|| "-1".to_string())).is_err());
        assert!(toml::from_str::<Config>("[http]\nbindd = 1\n").is_err(), "unknown keys are refused");
        let mut e: Config =
            toml::from_str("[embed.rooms.demo]\nallowed_origins = [\"https://shop.example\", \"http://127.0.0.1:8080\"]\npublic = true\n")
                .unwrap();
        e.validate().unwrap();
        assert!(e.embed.room("demo").is_some_and(|r| r.public) && e.embed.room("other").is_none());
        let mut t: Config = toml::from_str(
            "[[rtc.ice_servers]]\nurls = [\"stun:stun.example.net\"]\n[[rtc.ice_servers]]\nurls = [\"turn:turn.example.net?transport=udp\"]\nusername = \"u\"\ncredential = \"p\"\n",
        )
        .unwrap();
        t.validate().unwrap();
        assert_eq!(
            t.rtc.ice_servers[1].links(),
            vec![
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\""
                    .to_owned()
            ]
        );
        for bad in ["http://x", "stun:a b", "stun:a>, <stun:b", "turn:x;rel=y"] {
            t.rtc.ice_servers[0].urls = vec![bad.into()];
            assert!(t.validate().is_err(), "{bad} is refused");
        }
        t.rtc.ice_servers[0].urls = vec!["stun:ok.example".into()];
        t.rtc.ice_servers[1].credential = "p\"; rel=\"x".into();
        assert!(t.validate().is_err(), "a quote in a credential is refused");
        for bad in [
            "shop.example",
            "https://shop.example/path",
            "https://a.example; script-src *",
            "https://*.example",
            "https://a.example:",
            "javascript:x",
        ] {
            e.embed.rooms.get_mut("demo").unwrap().allowed_origins = vec![bad.into()];
            assert!(e.validate().is_err(), "{bad} is refused");
        }
        let mut c = Config { dev: Some(false), ..Config::default() };
        assert!(c.validate().is_err(), "no secret outside dev mode");
        c.room.max_publishers = 5;
        c.dev = None;
        assert!(c.validate().is_err());
    }

    #[test]
    fn commerce_as_docs_api_shows_it_and_its_edges() {
        let doc = "[api]\nkey = \"0123456789abcdef\"\n[commerce]\ncurrency = \"EUR\"\nwebhook_secret = \"a-long-random-secret\"\n\
                   tiers = [\n  { name = \"Supporter\", price_minor = 99 },\n  { name = \"Fan\", price_minor = 299 },\n  { name = \"Superfan\", price_minor = 499 },\n]\n";
        let c: Config = toml::from_str(doc).unwrap();
        c.validate().unwrap();
        assert_eq!((c.commerce.tiers[2].name.as_str(), c.commerce.tiers[2].price_minor), ("Superfan", 499));
        for bad in [
            "[api]\nkey = \"short\"",
            "[commerce]\ncurrency = \"euro\"",
            "[commerce]\nwebhook_secret = \"short\"",
            "[commerce]\ntiers = [{ name = \"One\", price_minor = 1 }]",
            "[commerce]\ntiers = [{ name = \"A\", price_minor = 1 }, { name = \"\", price_minor = 2 }, { name = \"C\", price_minor = 3 }]",
            "[commerce]\ntiers = [{ name = \"A\", price_minor = 0 }, { name = \"B\", price_minor = 2 }, { name = \"C\", price_minor = 3 }]",
            "[commerce]\nwebhook_tolerance_secs = 5",
            "[commerce]\nmax_image_bytes = 10",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[commerce]\ntiers = [{ name = \"A\", price = 1 }]").is_err(), "unknown keys are refused");
    }

    #[test]
    fn layer_knobs_reach_the_sfu_and_are_bounded() {
        let c: Config = toml::from_str("[rtc]\ninitial_estimate_kbps = 800\nlayer_up_hold_ms = 500\nlayer_up_headroom = 1.5\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.sfu_config().keyframe_cache, Duration::from_millis(500), "the kept picture is on by default");
        for (ms, ok) in [(0, true), (2_000, true), (2_001, false)] {
            let mut c = Config::default();
            c.apply_env(|k| (k == "ONAIR_RTC_KEYFRAME_CACHE_MS").then(|| ms.to_string())).unwrap();
            assert_eq!(c.validate().is_ok(), ok, "keyframe_cache_ms = {ms}");
            if ok {
                assert_eq!(c.sfu_config().keyframe_cache, Duration::from_millis(ms));
            }
        }
        assert!(c.sfu_config().lean_send_path, "the lean send path is on by default");
        for (v, ok) in [("false", Some(false)), ("true", Some(true)), ("0", None)] {
            let mut c = Config::default();
            let r = c.apply_env(|k| (k == "ONAIR_RTC_LEAN_SEND_PATH").then(|| v.to_owned()));
            assert_eq!(r.is_ok(), ok.is_some(), "ONAIR_RTC_LEAN_SEND_PATH={v}");
            if let Some(lean) = ok {
                assert_eq!(c.sfu_config().lean_send_path, lean);
            }
        }
        let l = c.sfu_config().layers;
        assert_eq!(l.initial_estimate_bps, 800_000.0);
        assert_eq!(l.up_hold, Duration::from_millis(500));
        assert_eq!(l.up_headroom, 1.5);
        assert_eq!(l.max_estimate_bps, 50_000_000.0);
        assert_eq!(c.sfu_config().fallback, sfu::FallbackPolicy::default(), "the defaults are the SFU's");
        for bad in [
            "layer_up_headroom = 0.5",
            "initial_estimate_kbps = 60000",
            "max_estimate_kbps = 10",
            "layer_up_hold_ms = 600000",
            "fallback_enter_ms = 100",
            "fallback_headroom = 0.9",
        ] {
            let c: Config = toml::from_str(&format!("[rtc]\n{bad}\n")).unwrap();
            assert!(c.validate().is_err(), "{bad} is refused");
        }
    }
}
