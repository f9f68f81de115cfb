//! The admin listener (`[admin] bind`, loopback by default): `/metrics` for Prometheus, and the
//! operator dashboard (`/admin`) with its data (`/admin/api/overview`) behind the admin token.
//! It is a listener of its own, not routes on the public one, so that what operators see —
//! every live, every problem report — is reachable only where the operator put it (loopback, a
//! cluster-internal network), and a scraper needs no secret.

use crate::api::{ApiError, ApiResult};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::qoe::Kpis;
use crate::live::room::lock;
use crate::protocol::RoomState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Instant;
use subtle::ConstantTimeEq;

const PAGE: &str = include_str!("../../../web-client/admin/index.html");
const SCRIPT: &str = include_str!("../../../web-client/admin/admin.js");
const STYLE: &str = include_str!("../../../web-client/admin/admin.css");

/// Past lives the overview lists, and problem reports.
const PAST: usize = 20;
const PROBLEMS: usize = 50;
/// Alert thresholds (the same as deploy/prometheus/alerts.yml).
pub const STARTUP_TARGET: f64 = 0.95;
pub const FREEZE_RATIO_TARGET: f64 = 0.01;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin", get(|| async { file(PAGE, "text/html; charset=utf-8") }))
        .route("/admin/", get(|| async { file(PAGE, "text/html; charset=utf-8") }))
        .route("/admin/admin.js", get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/admin/admin.css", get(|| async { file(STYLE, "text/css; charset=utf-8") }))
        .route("/admin/api/overview", get(overview))
        .with_state(state)
}

fn file(body: &'static str, ty: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn metrics(State(app): State<AppState>) -> Response {
    let mut res = super::render(&app).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}

/// The admin token, or (dev mode with none configured) nobody's.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let want = app.config.admin.token.as_bytes();
    if want.is_empty() {
        return if app.config.dev_mode() {
            Ok(())
        } else {
            Err(AppError::new(ErrorCode::NotConfigured, "the dashboard needs admin.token (or ONAIR_ADMIN_TOKEN)"))
        };
    }
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| AppError::new(ErrorCode::TokenMissing, "Authorization: Bearer <admin token> is required"))?;
    if bool::from(got.trim().as_bytes().ct_eq(want)) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::TokenBadSignature, "wrong admin token"))
    }
}

#[derive(Serialize)]
struct StageMember {
    identity: String,
    name: String,
    kind: crate::protocol::ParticipantKind,
}

#[derive(Serialize)]
pub struct Alert {
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct LiveNow {
    room: String,
    live_id: String,
    profile: String,
    state: RoomState,
    started_at: Option<u64>,
    stage: Vec<StageMember>,
    viewers: u64,
    kpis: Kpis,
    alerts: Vec<Alert>,
}

/// The alerts a live's KPIs and state raise now.
pub fn alerts(k: &Kpis, state: RoomState) -> Vec<Alert> {
    let mut out = Vec::new();
    if let Some(r) = k.startup_reliability.filter(|r| *r < STARTUP_TARGET && k.startups >= 3) {
        out.push(Alert {
            code: "startup_reliability",
            message: format!("startup reliability {:.0} % is below {:.0} %", r * 100.0, STARTUP_TARGET * 100.0),
        });
    }
    if let Some(f) = k.freeze_ratio.filter(|f| *f > FREEZE_RATIO_TARGET && k.watch_secs >= 30.0) {
        out.push(Alert {
            code: "freeze_ratio",
            message: format!("freeze ratio {:.1} % is above {:.0} %", f * 100.0, FREEZE_RATIO_TARGET * 100.0),
        });
    }
    if state == RoomState::Held {
        out.push(Alert { code: "publisher_lost", message: "the host's connection dropped: the live is held".into() });
    }
    out
}

/// CPU use between two overview calls.
static LAST_CPU: Mutex<Option<(Instant, f64, u64)>> = Mutex::new(None);

async fn overview(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers)?;
    let mut lives = Vec::new();
    let mut participants = 0;
    for room in app.rooms.all() {
        let r = lock(&room);
        participants += r.len();
        let kpis = r.qoe.kpis();
        lives.push(LiveNow {
            room: r.name.clone(),
            live_id: r.chat.live_id.clone(),
            profile: r.profile().name.clone(),
            state: r.state(),
            started_at: r.info().started_at,
            stage: r
                .on_stage()
                .into_iter()
                .map(|p| StageMember { identity: p.identity.clone(), name: p.name.clone(), kind: p.kind })
                .collect(),
            viewers: r.role_counts().into_iter().filter(|(role, _)| *role == crate::auth::Role::Viewer).map(|(_, n)| n).sum(),
            alerts: alerts(&kpis, r.state()),
            kpis,
        });
    }
    lives.sort_by(|a, b| a.room.cmp(&b.room));
    let past = app.store.past_lives(PAST).await.map_err(ApiError)?;
    let (recent, counts) = app.store.problems(PROBLEMS).await.map_err(ApiError)?;
    let mut by_tag: serde_json::Map<String, serde_json::Value> =
        crate::live::qoe::PROBLEM_TAGS.iter().map(|t| ((*t).to_owned(), 0.into())).collect();
    for (tag, n) in counts {
        by_tag.insert(tag, n.into());
    }
    let stats = app.sfu.stats();
    let (cpu_percent, sent_per_sec) = {
        let now = (Instant::now(), super::process_cpu_seconds(), stats.rtp_out);
        let mut last = LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
        let rates = last.map(|(t, cpu, sent)| {
            let dt = now.0.saturating_duration_since(t).as_secs_f64().max(1e-3);
            ((now.1 - cpu) / dt * 100.0, now.2.saturating_sub(sent) as f64 / dt)
        });
        *last = Some(now);
        rates.map_or((None, None), |(c, s)| (Some(c), Some(s)))
    };
    let body = serde_json::json!({
        "node": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": app.started.elapsed().as_secs(),
            "cores": super::cores(),
            "cpu_percent": cpu_percent,
            "rss_bytes": super::resident_bytes(),
            "rooms": app.rooms.len(),
            "participants": participants,
            "rtp_packets_sent_per_sec": sent_per_sec,
            "forwarding_delay_p99_us": stats.forwarding_delay.quantile_us(0.99),
        },
        "lives": lives,
        "past": past,
        "problems": { "by_tag": by_tag, "recent": recent },
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
