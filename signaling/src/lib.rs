//! Onair signaling: HTTP API and WebSocket sessions (axum), studio feeds (RTMP), JWT auth,
//! room rules. It drives the media plane (`sfu`) through its typed handle and knows nothing of RTP.
//!
//! ```text
//! browser ──WebSocket /ws──► ws::run ─┐  (transport::websocket, transport::limits)
//! encoder ──RTMP :1935──► live::studio ┤  (transport::rtmp_guard)
//!                                      ▼
//!                     live::join (authenticate → room + seat → SFU → fan out)
//!                                      │
//!    client message ──► live::dispatch ──► live::{media, room, chat, stats, studio::keys}
//!                                      │            │                    │
//!                      live::room::Room (rules, broadcasts)   sfu::Sfu   store::Store
//! ```
//!
//! Errors are one type, [`error::AppError`]; docs/architecture.md §2 maps every module.

pub mod api;
pub mod app;
pub mod archive;
pub mod assets;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod hooks;
pub mod live;
pub mod observe;
pub mod profiles;
pub mod protocol;
pub mod store;
pub mod transport;
pub mod ws;

pub use app::AppState;

use crate::auth::{Authenticator, Role};
use crate::config::Config;
use crate::live::{room, studio};
use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the rooms' clocks are read (see `Server::start`).
const ROOM_TICK: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    room: Option<String>,
}

async fn ws_handler(
    Query(q): Query<WsQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(app): State<AppState>,
    req: Request,
) -> Response {
    // A cascade edge's member connection says which node it is and signs it (checked in `run`).
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let edge = header("x-onair-edge").zip(header(cluster::cascade::HEADER));
    transport::websocket::upgrade(req, move |socket| ws::run(socket, app, q.token, q.room, peer.to_string(), edge))
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: whether to send this node new participants (503 while draining).
async fn readyz(State(app): State<AppState>) -> Response {
    if app.draining.get().is_some() { (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response() } else { "ready".into_response() }
}

async fn stats(State(app): State<AppState>) -> Response {
    axum::Json(live::stats::node(&app)).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    room: String,
    identity: String,
    name: Option<String>,
    role: String,
    profile: Option<String>,
}

/// Dev mode only: mint a token (the lobby page uses it). Not routed at all in production.
async fn dev_token(State(app): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let Some(role) = Role::parse(&q.role) else {
        return (StatusCode::BAD_REQUEST, "role must be host, cohost, moderator or viewer").into_response();
    };
    if q.room.is_empty() || q.room.len() > auth::MAX_ROOM_BYTES || q.identity.is_empty() || q.identity.len() > auth::MAX_IDENTITY_BYTES {
        return (StatusCode::BAD_REQUEST, "room and identity must be 1-128 bytes").into_response();
    }
    if q.profile.as_ref().is_some_and(|p| !app.config.profiles.contains_key(p)) {
        return (StatusCode::BAD_REQUEST, "no such live profile").into_response();
    }
    match app.auth.mint_with_profile(&q.room, &q.identity, q.name.as_deref(), role, 6 * 3600, q.profile.as_deref()) {
        Ok(t) => axum::Json(serde_json::json!({ "token": t })).into_response(),
        Err(e) => {
            tracing::error!("minting a dev token: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// What the cluster's registry says of this node.
fn node_load(app: &AppState) -> cluster::Load {
    let rooms = app.rooms.all();
    // Viewers served here as a cascade edge count too: their media is this node's work.
    let edge_viewers = app.edges.load().0 as u64;
    let participants = rooms.iter().map(|r| live::room::lock(r).len() as u64).sum::<u64>() + edge_viewers;
    cluster::Load { participants, rooms: rooms.len() as u64, draining: app.draining.get().is_some() }
}

/// The HTTP application.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws_handler))
        .route("/rtc", get(ws_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/stats", get(stats))
        .route("/internal/v1/relay", get(cluster::cascade::relay_handler));
    if state.config.dev_mode() {
        router = router.route("/api/dev/token", get(dev_token));
    }
    // On a cluster the API's room routes, WHIP and WHEP are answered by the node that runs the
    // live (cluster/forward.rs).
    let to_the_live = || axum::middleware::from_fn_with_state(state.clone(), cluster::forward::to_the_live);
    let (api, whip, whep) =
        (api::router().layer(to_the_live()), live::studio::whip::router().layer(to_the_live()), live::whep::router().layer(to_the_live()));
    router.merge(api).merge(whip).merge(whep).merge(assets::router()).with_state(state)
}

/// A running server (HTTP + media plane).
pub struct Server {
    pub http_addr: SocketAddr,
    /// The RTMP listener, when enabled.
    pub rtmp_addr: Option<SocketAddr>,
    /// The admin listener (`/metrics`, the dashboard), unless its address was taken.
    pub admin_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bind both listeners and start serving in the background.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        let secret = config.secret()?;
        let auth = Authenticator::new(&secret, &config.auth.algorithm, config.auth.leeway_secs)?;
        let config_archive = config.archive.clone();
        let sfu = sfu::Sfu::start(config.sfu_config())?;
        let listener = tokio::net::TcpListener::bind(config.http.bind).await?;
        let http_addr = listener.local_addr()?;
        let store = Arc::new(store::Store::open(&config).await?);
        let cluster = cluster::Cluster::connect(&config, http_addr).await?;
        let default_words = Arc::new(live::chat::text::default_blocked_words(&config.chat)?);
        let (shutdown, mut rx) = tokio::sync::watch::channel(false);
        let hooks = hooks::Hooks::start(&config.webhooks, store.clone(), rx.clone());
        let state = AppState {
            hooks,
            rooms: Arc::new(room::Rooms::new(
                config.room.clone(),
                Arc::new(config.chat.clone()),
                default_words,
                Arc::new(config.profiles.clone()),
                Arc::new(config.commerce.clone()),
            )),
            studio: Arc::new(studio::feeds::Studio::default()),
            store,
            config: Arc::new(config),
            auth,
            sfu,
            started: Instant::now(),
            resumes: Arc::default(),
            players: Arc::default(),
            draining: Arc::new(std::sync::OnceLock::new()),
            archive: Arc::new(archive::Archive::new(&config_archive, &secret)),
            cluster,
            edges: Arc::default(),
        };
        let (rooms, store, app_state) = (state.rooms.clone(), state.store.clone(), state.clone());
        let mut reaper_rx = rx.clone();
        // The conversation's fan-out on its own task: the store's awaits below never delay it.
        let (fanout_rooms, mut fanout_rx) = (state.rooms.clone(), rx.clone());
        let fanout_every = Duration::from_millis(state.config.chat.fanout_ms);
        tokio::spawn(async move {
            let mut fanout = tokio::time::interval(fanout_every);
            fanout.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = fanout.tick() => fanout_rooms.flush_chat(),
                    _ = fanout_rx.changed() => break,
                }
            }
        });
        // The rooms' clocks (the duration cap and its warnings, the host's grace, empty rooms,
        // key frames by profile) on their own task, four times a second: a warning "1 s to go"
        // has a window of one second, which a 1 s tick late by a millisecond would miss, and the
        // store's awaits of the other timers must not delay it.
        let (reap_rooms, reap_state, mut reap_rx) = (state.rooms.clone(), state.clone(), rx.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ROOM_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        for closed in reap_rooms.reap(Instant::now(), &reap_state.store).await {
                            live::schedule::on_ended(&reap_state, &closed.room, &closed.live_id, &closed.profile).await;
                            // The video is built off this clock's task.
                            let (app, live) = (reap_state.clone(), closed.live_id.clone());
                            tokio::spawn(async move { app.archive.live_ended(&app, &live).await });
                        }
                        reap_rooms.ask_keyframes(Instant::now(), &reap_state.sfu);
                    }
                    _ = reap_rx.changed() => break,
                }
            }
        });
        // The cluster's heartbeat: this node's record and its rooms' placement (cluster/).
        if let Some(cluster) = state.cluster.clone() {
            let (beat_state, mut beat_rx) = (state.clone(), rx.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(cluster.heartbeat());
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            let load = node_load(&beat_state);
                            cluster.beat(load, beat_state.rooms.held()).await;
                        }
                        _ = beat_rx.changed() => break,
                    }
                }
            });
        }
        // The archive: entries a stopped server left unfinished, then the sweeper.
        let (sweep_state, mut sweep_rx) = (state.clone(), rx.clone());
        tokio::spawn(async move {
            sweep_state.archive.recover(&sweep_state).await;
            let mut every = tokio::time::interval(Duration::from_secs(sweep_state.config.archive.sweep_secs));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => { sweep_state.archive.sweep(&sweep_state).await; }
                    _ = sweep_rx.changed() => break,
                }
            }
        });
        let window = Duration::from_millis(state.config.chat.reaction_window_ms);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reactions = tokio::time::interval(window);
            reactions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

            loop {
                tokio::select! {
                    _ = every.tick() => live::schedule::tick(&app_state).await,
                    _ = reactions.tick() => {
                        live::chat::flush_reactions(&rooms, &store).await;
                        live::commerce::flush_counters(&rooms, &store).await;
                    }
                    _ = reaper_rx.changed() => break,
                }
            }
        });
        // A taken RTMP port must not keep the rooms from opening: studio feeds are then off,
        // loudly, and everything else runs.
        let rtmp_addr = if state.config.rtmp.enabled {
            match studio::listen(state.clone(), rx.clone()).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::error!("studio feeds (RTMP) are off: {e}");
                    None
                }
            }
        } else {
            None
        };
        if observe::install().is_some() {
            observe::register_series(state.config.profiles.keys().cloned());
        }
        sfu::metrics::set_per_packet(state.config.admin.media_metrics);
        // Like RTMP: a taken admin port leaves the dashboard off, loudly, and the lives running.
        let admin_addr = match tokio::net::TcpListener::bind(state.config.admin.bind).await {
            Ok(l) => {
                let addr = l.local_addr().ok();
                let (admin, mut stop) = (observe::admin::router(state.clone()), rx.clone());
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = stop.changed().await;
                    };
                    if let Err(e) = axum::serve(l, admin).with_graceful_shutdown(stop).await {
                        tracing::error!("admin listener: {e}");
                    }
                });
                addr
            }
            Err(e) => {
                tracing::error!(bind = %state.config.admin.bind, "the admin listener (metrics, dashboard) is off: {e}");
                None
            }
        };
        let app = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::error!("http server: {e}");
            }
        });
        tracing::info!(%http_addr, "signaling listening (HTTP/WebSocket)");
        Ok(Server { http_addr, rtmp_addr, admin_addr, state, shutdown, task })
    }

    /// Start draining (the first SIGTERM): refuse new participants, tell every member how long
    /// the node stays at most. Returns false when it was draining already.
    pub fn drain(&self) -> bool {
        if self.state.draining.set(Instant::now()).is_err() {
            return false;
        }
        let ends_in_secs = self.state.config.drain.max_secs;
        let rooms = self.state.rooms.all();
        tracing::info!(
            rooms = rooms.len(),
            max_secs = ends_in_secs,
            "draining: no new participants; the lives on this node run to their end"
        );
        for room in rooms {
            live::room::lock(&room).broadcast_all(protocol::ServerMsg::ServerDraining { ends_in_secs });
        }
        true
    }

    /// How many lives still run here (rooms with members that have not ended), and lives this
    /// node serves viewers of as a cascade edge (they watch on to the end too).
    pub fn lives_running(&self) -> usize {
        self.state.edges.load().1
            + self
                .state
                .rooms
                .all()
                .iter()
                .filter(|r| {
                    let r = live::room::lock(r);
                    r.state() != protocol::RoomState::Ended && !r.is_empty()
                })
                .count()
    }

    pub fn sfu(&self) -> &sfu::Sfu {
        &self.state.sfu
    }

    /// Stop accepting, close the media plane and the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        // The last reaction window is kept too.
        live::chat::flush_reactions(&self.state.rooms, &self.state.store).await;
        live::commerce::flush_counters(&self.state.rooms, &self.state.store).await;
        self.state.rooms.flush_chat();
        // Recordings are closed whole (the next start builds their videos).
        self.state.archive.stop_all(&self.state).await;
        // Out of the cluster's registry: the lives placed here are free to go elsewhere.
        if let Some(cluster) = &self.state.cluster {
            cluster.leave().await;
        }
        // Webhook events emitted so far are stored for the next start to deliver.
        self.state.hooks.flush().await;
        self.state.store.close().await;
        let sfu = self.state.sfu.clone();
        let _ = tokio::task::spawn_blocking(move || sfu.shutdown()).await;
    }
}
