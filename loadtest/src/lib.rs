//! Onair's load generator as a library: [`run`] plays a [`Scenario`] against a server and
//! returns a [`Report`]. The `onair-loadtest` binary adds the command line, live progress, the
//! table, JSON and the chart.
//!
//! Every participant joins through the real signaling (WebSocket, JWT) and connects real WebRTC
//! (ICE, DTLS, SRTP) on the sans-IO engine ([`engine`]). Publishers send three VP8-shaped
//! simulcast layers and Opus-sized audio; every packet carries its send time ([`payload`]).

pub mod chat;
pub mod engine;
pub mod fault;
pub mod floor;
pub mod kpis;
pub mod payload;
pub mod report;
pub mod server;
pub mod signal;
pub mod twcc;

use chat::ChatLive;
use engine::{Engine, PublisherSpec, ViewerResult};
use signal::{ChatSide, JoinOutcome, Role};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

pub use chat::ChatLoad;
pub use report::Report;

/// Where tokens come from.
#[derive(Clone, Debug)]
pub enum Tokens {
    /// Mint them with the server's HMAC secret (HS256).
    Secret(String),
    /// One token for everyone (it must allow the role asked for; viewers only).
    Fixed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    Auto,
    Low,
    High,
}

/// What is being loaded.
#[derive(Clone, Debug)]
pub enum Target {
    /// An Onair node at `Scenario::url`.
    Onair,
    /// Janus's streaming plugin: WebSocket API at `ws_url`, mountpoint `mountpoint` fed with
    /// plain RTP on `audio`/`video` (loadtest/janus/ has the configuration).
    Janus { ws_url: String, mountpoint: u64, audio: std::net::SocketAddr, video: std::net::SocketAddr },
}

#[derive(Clone)]
pub struct Scenario {
    pub target: Target,
    /// `http://host:port` of the signaling server.
    pub url: String,
    /// Many nodes: the viewers join at these nodes' URLs in turn (`--viewer-urls`), not at `url`;
    /// a node that does not run the live redirects them to the one that does. Empty: `url`.
    pub viewer_urls: Vec<String>,
    pub room: String,
    pub tokens: Tokens,
    pub publishers: usize,
    /// Bits per second of the q/h/f layers.
    pub rates: [u32; 3],
    pub keyframe_every: Duration,
    /// Pace the publishers' video at this factor of its rate, as browsers do (`None`: a frame's
    /// packets leave together).
    pub pace: Option<f64>,
    /// Viewers open the server's SRTP themselves and write their own transport-wide CC
    /// feedback (`engine::LeanRx`): a harness core drives more of them.
    pub lean_viewers: bool,
    pub viewers: usize,
    /// Viewer joins per second.
    pub ramp: f64,
    /// Steady state, after the ramp.
    pub duration: Duration,
    pub layer: Layer,
    /// Address the peers bind and advertise.
    pub local_ip: IpAddr,
    /// The server process, for CPU time and RSS (local targets only).
    pub server_pid: Option<u32>,
    /// Called once a second with a progress line.
    pub progress: Option<Arc<dyn Fn(String) + Send + Sync>>,
    /// Comments and reactions (Onair only); with it, a window without chat is measured first.
    pub chat: ChatLoad,
    /// Onair's admin listener (`http://host:7881`) and its token: the server's KPIs are read
    /// there after the run and printed beside the viewers' own.
    pub admin: Option<(String, Option<String>)>,
    /// Fault scenarios played after the steady window (Onair only), each with its recovery.
    pub faults: fault::Faults,
}

impl Scenario {
    fn token(&self, identity: &str, role: signaling::auth::Role) -> anyhow::Result<String> {
        match &self.tokens {
            Tokens::Fixed(t) => Ok(t.clone()),
            Tokens::Secret(secret) => {
                let auth = signaling::auth::Authenticator::new(secret, "HS256", 5)?;
                Ok(auth.mint(&self.room, identity, Some(identity), role, 6 * 3600)?)
            }
        }
    }

    fn ws_url(&self) -> String {
        ws_url_of(&self.url)
    }

    /// Where viewer `i` joins.
    fn viewer_ws_url(&self, i: usize) -> String {
        if self.viewer_urls.is_empty() { self.ws_url() } else { ws_url_of(&self.viewer_urls[i % self.viewer_urls.len()]) }
    }
}

/// `ws(s)://host:port/ws` of an `http(s)://host:port` base.
fn ws_url_of(url: &str) -> String {
    let base = url.trim_end_matches('/');
    let base = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{base}/ws")
}

/// Play the scenario. Bounded: ramp + 15 s for joins + duration + a few seconds to wind down.
pub async fn run(s: Scenario) -> anyhow::Result<Report> {
    let engine = Arc::new(Engine::start(s.local_ip, s.lean_viewers)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ws_url = s.ws_url();
    let mut tasks = Vec::new();
    let say = |line: String| {
        if let Some(p) = &s.progress {
            p(line);
        }
    };

    // Publishers first: the first one is the host (the room goes live with it).
    let spec = PublisherSpec { rates: s.rates, keyframe_every: s.keyframe_every, pace: s.pace };
    if let Target::Janus { audio, video, .. } = &s.target {
        let (tx, rx) = oneshot::channel();
        engine.send(engine::Cmd::RawPublisher { spec, audio_to: *audio, video_to: *video, reply: tx });
        rx.await.map_err(|_| anyhow::anyhow!("engine stopped"))?.map_err(|e| anyhow::anyhow!(e))?;
    }
    let webrtc_publishers = if matches!(s.target, Target::Onair) { s.publishers } else { 0 };
    for i in 0..webrtc_publishers {
        let role = if i == 0 { signaling::auth::Role::Host } else { signaling::auth::Role::Cohost };
        let token = s.token(&format!("lt-pub-{i}"), role)?;
        let (tx, _rx) = oneshot::channel();
        tasks.push(tokio::spawn(signal::participant(
            ws_url.clone(),
            token,
            1 + i as u64,
            Role::Publisher(spec),
            engine.clone(),
            tx,
            stop_rx.clone(),
            None,
            None,
        )));
    }
    if s.publishers > 0 {
        let deadline = Instant::now() + Duration::from_secs(15);
        while engine.live.published_packets.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(engine.live.published_packets.load(Ordering::Relaxed) > 0, "the publishers did not connect within 15 s");
        say(format!("{} publisher(s) sending", s.publishers));
    }
    let server_before = s.server_pid.map(server::ProcSample::take).transpose()?;

    // Viewers, at the ramp rate.
    let quality = match s.layer {
        Layer::Auto => None,
        Layer::Low => Some("low".to_string()),
        Layer::High => Some("high".to_string()),
    };
    let onair = matches!(s.target, Target::Onair);
    let chatting = onair && s.chat.active();
    let chat_live = Arc::new(ChatLive::default());
    let (chat_tx, chat_rx) = watch::channel(false);
    let mut outcomes = Vec::with_capacity(s.viewers);
    let reconnects = Arc::new(signal::Reconnects::default());
    let mut controls: Vec<(u64, tokio::sync::mpsc::UnboundedSender<signal::Ctl>)> = Vec::new();
    let ramp_started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / s.ramp.max(0.1));
    for i in 0..s.viewers {
        let at = ramp_started + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let (tx, rx) = oneshot::channel();
        outcomes.push(rx);
        let id = 1000 + i as u64;
        match &s.target {
            Target::Onair => {
                let token = s.token(&format!("lt-viewer-{i}"), signaling::auth::Role::Viewer)?;
                let role = Role::Viewer { quality: quality.clone() };
                let chat = chatting.then(|| ChatSide { live: chat_live.clone(), plan: s.chat.plan(i, s.viewers), on: chat_rx.clone() });
                let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
                controls.push((id, ctl_tx));
                let ctl = Some((ctl_rx, reconnects.clone()));
                tasks.push(tokio::spawn(signal::participant(
                    s.viewer_ws_url(i),
                    token,
                    id,
                    role,
                    engine.clone(),
                    tx,
                    stop_rx.clone(),
                    chat,
                    ctl,
                )));
            }
            Target::Janus { ws_url, mountpoint, .. } => {
                tasks.push(tokio::spawn(signal::janus_viewer(ws_url.clone(), *mountpoint, id, engine.clone(), tx, stop_rx.clone())));
            }
        }
        if i % 50 == 49 {
            say(format!("ramp: {} of {} viewers joining, {} connected", i + 1, s.viewers, engine.live.connected.load(Ordering::Relaxed)));
        }
    }
    let mut joined = 0usize;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for rx in outcomes {
        match tokio::time::timeout(Duration::from_secs(15), rx).await {
            Ok(Ok(JoinOutcome::Joined)) => joined += 1,
            Ok(Ok(JoinOutcome::Failed(reason))) => *failures.entry(reason).or_default() += 1,
            _ => *failures.entry("no join outcome within 15 s".into()).or_default() += 1,
        }
    }
    // Let media settle (ICE, DTLS, first keyframes) before the measured window.
    let settle = Instant::now() + Duration::from_secs(10);
    while (engine.live.connected.load(Ordering::Relaxed) as usize) < joined && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats_url = format!("{}/api/stats", s.url.trim_end_matches('/'));
    let stats_url = onair.then_some(stats_url.as_str());
    let mut phases = Vec::new();
    if chatting && s.chat.baseline {
        let w = window(&s, &engine, "media only", stats_url, None).await?;
        phases.push(report::phase("media only", &w));
    }
    let chat_started = Instant::now();
    if chatting {
        let _ = chat_tx.send(true);
    }
    let main = window(&s, &engine, if chatting { "media + chat" } else { "steady" }, stats_url, chatting.then_some(&*chat_live)).await?;
    let mut chat_figures = None;
    if chatting {
        let _ = chat_tx.send(false);
        let chat_for = chat_started.elapsed();
        // Comments sent at the window's end are still on their way: wait for them (they count
        // by their send time, so a late one is late, not lost).
        say("chat load stopped; waiting 3 s for the last deliveries".into());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let baseline = phases.first().cloned();
        let (figures, phase) = report::chat(&s, &main, &chat_live, chat_for, baseline.as_ref());
        chat_figures = Some(figures);
        phases.push(phase);
    }
    let mut fault_reports = Vec::new();
    if onair {
        for &kind in &s.faults.kinds {
            let r = play_fault(&s, &engine, kind, &controls, &reconnects).await?;
            say(format!("fault {}", r.summary()));
            fault_reports.push(r);
            tokio::time::sleep(s.faults.settle).await;
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let live = engine.live.clone();
    let engine = Arc::try_unwrap(engine).map_err(|_| anyhow::anyhow!("engine still shared after the run"))?;
    let results: Vec<ViewerResult> = engine.finish().into_values().collect();
    let own = kpis::from_viewers(&results);
    let mut server_kpis = None;
    if let Some((url, token)) = &s.admin {
        // The viewers' last reports were sent as they left: give the server a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match server::admin_overview(url, token.as_deref()).await {
            Ok(o) => server_kpis = kpis::from_overview(&o, &s.room),
            Err(e) => say(format!("the server's KPIs could not be read: {e}")),
        }
    }
    let mut report = report::build(&s, joined, failures, results, &live, server_before, &main);
    report.kpis = Some(own);
    report.server_kpis = server_kpis;
    report.phases = phases;
    report.chat = chat_figures;
    report.faults = fault_reports;
    Ok(report)
}

/// Play one fault and wait (at most `recover_within`) for every viewer it hit to show a frame
/// sent after it.
async fn play_fault(
    s: &Scenario,
    engine: &Engine,
    kind: fault::FaultKind,
    controls: &[(u64, tokio::sync::mpsc::UnboundedSender<signal::Ctl>)],
    reconnects: &signal::Reconnects,
) -> anyhow::Result<fault::FaultReport> {
    use engine::{Cmd, Who};
    let f = &s.faults;
    let counts0 = (reconnects.resumed.load(Ordering::Relaxed), reconnects.rejoined.load(Ordering::Relaxed));
    let (who, what, since_us) = match kind {
        fault::FaultKind::Reconnect => {
            // Every k-th viewer, so the movers are spread over the ramp's join order.
            let n = ((controls.len() as f64 * f.reconnect_share).round() as usize).clamp(1, controls.len().max(1));
            let step = (controls.len() / n.max(1)).max(1);
            let movers: Vec<&(u64, _)> = controls.iter().step_by(step).take(n).collect();
            let since_us = payload::now_us();
            let ids: Vec<u64> = movers.iter().map(|(id, _)| *id).collect();
            engine.send(Cmd::Watch { who: Who::Ids(ids.clone()), since_us });
            for (_, tx) in &movers {
                let _ = tx.send(signal::Ctl::Reconnect);
            }
            (Who::Ids(ids), format!("{} of {} viewers moved to a new address at once", movers.len(), controls.len()), since_us)
        }
        fault::FaultKind::LossBurst => {
            engine.send(Cmd::Impair { who: Who::Viewers, loss: f.burst_loss, until: Instant::now() + f.burst });
            tokio::time::sleep(f.burst).await;
            let what = format!("{:.0} % loss both ways for {:.1} s on every viewer's path", f.burst_loss * 100.0, f.burst.as_secs_f64());
            (Who::Viewers, what, payload::now_us())
        }
        fault::FaultKind::PublisherDrop => {
            engine.send(Cmd::Impair { who: Who::Publishers, loss: 1.0, until: Instant::now() + f.publisher_drop });
            tokio::time::sleep(f.publisher_drop).await;
            (Who::Viewers, format!("the publishers' network gone for {:.1} s", f.publisher_drop.as_secs_f64()), payload::now_us())
        }
    };
    if !matches!(kind, fault::FaultKind::Reconnect) {
        engine.send(Cmd::Watch { who: who.clone(), since_us });
    }
    let deadline = Instant::now() + f.recover_within;
    let recoveries = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (tx, rx) = oneshot::channel();
        engine.send(Cmd::Recoveries { reply: tx });
        let v = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| anyhow::anyhow!("the engine did not answer"))?
            .map_err(|_| anyhow::anyhow!("engine stopped"))?
            .map_err(|e| anyhow::anyhow!(e))?;
        if v.iter().all(|r| r.recovered.is_some()) || Instant::now() >= deadline {
            break v;
        }
    };
    let ms: Vec<f64> = recoveries.iter().filter_map(|r| r.recovered.map(|d| d.as_secs_f64() * 1000.0)).collect();
    // Of the lost: those that receive no video at all now (paused or gone), against those whose
    // video comes but never makes a frame a decoder could show.
    let silent = recoveries.iter().filter(|r| r.recovered.is_none() && r.video_age.is_none_or(|a| a > Duration::from_secs(1))).count();
    let reconnect = matches!(kind, fault::FaultKind::Reconnect);
    Ok(fault::FaultReport {
        kind,
        what,
        affected: recoveries.len(),
        recovered: ms.len(),
        lost: recoveries.len() - ms.len(),
        lost_without_video: silent,
        resumed: reconnect.then(|| reconnects.resumed.load(Ordering::Relaxed) - counts0.0),
        rejoined: reconnect.then(|| reconnects.rejoined.load(Ordering::Relaxed) - counts0.1),
        recovery_max_ms: ms.iter().copied().reduce(f64::max),
        recovery_ms: report::percentiles(ms),
    })
}

/// What one measured window saw.
pub struct Window {
    pub took: Duration,
    /// Packets all viewers received in it.
    pub received: u64,
    /// The media engine at its end: the delay histogram of the window, packets expected and
    /// received so far (and the same at its start, for the window's loss).
    pub media: engine::Measure,
    pub media_before: engine::Measure,
    pub cpu: Option<(server::ProcSample, server::ProcSample)>,
    pub harness: Option<(server::ProcSample, server::ProcSample)>,
    /// CPU time of the whole machine (s) at the window's start and end.
    pub machine: Option<(f64, f64)>,
    pub sfu: (Option<serde_json::Value>, Option<serde_json::Value>),
    pub chat: Option<(chat::Counts, chat::Counts)>,
}

async fn measure(engine: &Engine) -> anyhow::Result<engine::Measure> {
    let (tx, rx) = oneshot::channel();
    engine.send(engine::Cmd::Measure { reply: tx });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| anyhow::anyhow!("the engine did not answer"))?
        .map_err(|_| anyhow::anyhow!("engine stopped"))?
        .map_err(|e| anyhow::anyhow!(e))
}

/// Measure `s.duration` of steady state: server CPU, the harness's CPU, packets, delay, loss,
/// and the chat counters when `chat` is given.
async fn window(s: &Scenario, engine: &Engine, label: &str, stats_url: Option<&str>, chat: Option<&ChatLive>) -> anyhow::Result<Window> {
    let say = |line: String| {
        if let Some(p) = &s.progress {
            p(line);
        }
    };
    let media_before = measure(engine).await?;
    let window_start = Instant::now();
    let received0 = engine.live.packets.load(Ordering::Relaxed);
    let cpu0 = s.server_pid.map(server::ProcSample::take).transpose()?;
    let me0 = server::ProcSample::take(std::process::id()).ok();
    let machine0 = server::machine_busy_secs();
    let sfu0 = match stats_url {
        Some(u) => server::sfu_stats(u).await.ok(),
        None => None,
    };
    let chat0 = chat.map(ChatLive::counts);
    let mut next = Instant::now() + Duration::from_secs(1);
    let end = window_start + s.duration;
    let mut last_packets = engine.live.packets.load(Ordering::Relaxed);
    let mut last_chat = chat0;
    while Instant::now() < end {
        tokio::time::sleep_until(next.min(end).into()).await;
        next += Duration::from_secs(1);
        let p = engine.live.packets.load(Ordering::Relaxed);
        let chat_now = chat.map(ChatLive::counts);
        let chat_line = match (last_chat, chat_now) {
            (Some(a), Some(b)) => format!(
                ", {} comments sent, {} fan-out msgs received",
                b.comments_sent - a.comments_sent,
                (b.comments_received + b.reactions_received) - (a.comments_received + a.reactions_received)
            ),
            _ => String::new(),
        };
        say(format!(
            "{label}: {}/{} viewers connected, {} packets/s received{chat_line}, {:.0} s left",
            engine.live.connected.load(Ordering::Relaxed),
            s.viewers,
            p - last_packets,
            end.saturating_duration_since(Instant::now()).as_secs_f64()
        ));
        last_packets = p;
        last_chat = chat_now;
    }
    let took = window_start.elapsed();
    let cpu1 = s.server_pid.map(server::ProcSample::take).transpose()?;
    let me1 = server::ProcSample::take(std::process::id()).ok();
    let machine1 = server::machine_busy_secs();
    let chat1 = chat.map(ChatLive::counts);
    let received = engine.live.packets.load(Ordering::Relaxed) - received0;
    let media = measure(engine).await?;
    let sfu1 = match stats_url {
        Some(u) => server::sfu_stats(u).await.ok(),
        None => None,
    };
    Ok(Window {
        took,
        received,
        media,
        media_before,
        cpu: cpu0.zip(cpu1),
        harness: me0.zip(me1),
        machine: machine0.zip(machine1),
        sfu: (sfu0, sfu1),
        chat: chat0.zip(chat1),
    })
}
