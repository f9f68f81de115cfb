//! What operators see (docs/operations.md): Prometheus metrics through the `metrics` facade,
//! rendered at `/metrics` on the admin listener ([`admin`]), and the operator dashboard's data.
//!
//! Counters of the signaling side are recorded where things happen (a join, a message, a
//! comment, a QoE report). The media plane's are never recorded per packet here: its own relaxed
//! atomics (`sfu::Sfu::stats`) are read when Prometheus scrapes and written out as they are.

pub mod admin;
pub mod traces;

use crate::app::AppState;
use crate::live::qoe::{Client, state::Delta};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write;
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Milliseconds of freezing and watching not yet counted as whole seconds, per series.
static CARRY: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String, Client), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Seconds buckets of the QoE histograms.
const FIRST_FRAME_BUCKETS: [f64; 10] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
const RECOVERY_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];

/// Install the process's metrics recorder (once; later calls reuse it). `None` when another
/// recorder was installed first (a library user's): `/metrics` then shows the media plane only.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("onair_qoe_first_frame_seconds".into()), &FIRST_FRAME_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("onair_qoe_recovery_seconds".into()), &RECOVERY_BUCKETS))
                .map(|b| b.build_recorder());
            let recorder = match recorder {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("metrics: {e}");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!("metrics: another recorder is installed ({e}); /metrics shows the media plane only");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "onair_joins_total",
        "Joins by stage (signal_connected, media_connected, first_frame, failed, redirected) and refusal reason"
    );
    describe_counter!("onair_cluster_errors_total", "Cluster (Redis) operations that failed, by op; `conflict`: a room held by two nodes");
    describe_counter!("onair_ws_messages_total", "Client messages by type");
    describe_counter!("onair_resumes_total", "Dropped connections: resumed, joined afresh (token not honoured), or expired (grace over)");
    describe_counter!("onair_ws_resyncs_total", "Connections that fell behind (messages dropped) and got a resync");
    describe_counter!("onair_ws_slow_closes_total", "Connections closed as too slow (4008), by why: resyncs or stalled");
    describe_counter!("onair_comments_total", "Comments by visibility");
    describe_counter!("onair_reactions_total", "Reaction taps counted");
    describe_counter!("onair_moderation_actions_total", "Moderation actions by action");
    describe_counter!("onair_publishers_lost_total", "Hosts whose connection dropped during a live (the live is held)");
    describe_counter!("onair_problem_reports_total", "Viewers' problem reports by tag");
    describe_counter!("onair_qoe_startups_total", "Player startups by outcome (ok: first frame within 2 s)");
    describe_counter!("onair_qoe_freezes_total", "Video freezes the players reported");
    describe_counter!("onair_qoe_freeze_seconds_total", "Time players were frozen");
    describe_counter!("onair_qoe_watch_seconds_total", "Time players watched");
    describe_histogram!("onair_qoe_first_frame_seconds", "Join to first decoded frame, as players reported it");
    describe_histogram!("onair_qoe_recovery_seconds", "Freeze to video back, as players reported it");
    describe_gauge!("onair_rooms", "Rooms open on this node");
    describe_gauge!("onair_lives_on_air", "Rooms live or held now");
    describe_gauge!("onair_participants", "Members of the rooms by role");
}

/// Make the counters alerts watch exist at 0 from the start (a series that appears already at 1
/// is a step `increase()` cannot see): every live profile × client × outcome, hosts lost, joins
/// by stage, problem tags.
pub fn register_series(profiles: impl Iterator<Item = String>) {
    metrics::counter!("onair_publishers_lost_total").increment(0);
    for stage in ["signal_connected", "media_connected", "first_frame"] {
        metrics::counter!("onair_joins_total", "stage" => stage, "reason" => "").increment(0);
    }
    for tag in crate::live::qoe::PROBLEM_TAGS {
        metrics::counter!("onair_problem_reports_total", "tag" => tag).increment(0);
    }
    for profile in profiles {
        for client in [Client::Browser, Client::Loadtest, Client::Other] {
            for outcome in ["ok", "slow", "failed"] {
                metrics::counter!("onair_qoe_startups_total", "profile" => profile.clone(), "client" => client.as_str(), "outcome" => outcome)
                    .increment(0);
            }
            let labels = [("profile", profile.clone()), ("client", client.as_str().to_owned())];
            for name in ["onair_qoe_freezes_total", "onair_qoe_freeze_seconds_total", "onair_qoe_watch_seconds_total"] {
                metrics::counter!(name, &labels).increment(0);
            }
        }
    }
}

/// A QoE report's additions.
pub fn qoe(profile: &str, client: Client, d: &Delta) {
    let labels = [("profile", profile.to_owned()), ("client", client.as_str().to_owned())];
    if let Some(s) = d.startup {
        metrics::counter!("onair_qoe_startups_total", "profile" => profile.to_owned(), "client" => client.as_str(), "outcome" => s.as_str())
            .increment(1);
    }
    if let Some(f) = d.first_frame_ms {
        metrics::histogram!("onair_qoe_first_frame_seconds", &labels).record(f as f64 / 1000.0);
        metrics::counter!("onair_joins_total", "stage" => "first_frame", "reason" => "").increment(1);
    }
    if d.freezes > 0 {
        metrics::counter!("onair_qoe_freezes_total", &labels).increment(d.freezes);
    }
    // Prometheus counts in seconds and the facade's counters are whole numbers: milliseconds
    // are carried per series until they make a second, so the totals are exact to within one.
    for (name, ms) in [("onair_qoe_freeze_seconds_total", d.freeze_ms), ("onair_qoe_watch_seconds_total", d.watch_ms)] {
        let secs = {
            let mut carry = CARRY.lock().unwrap_or_else(|p| p.into_inner());
            let left = carry.entry((name, profile.to_owned(), client)).or_default();
            *left += ms;
            let whole = *left / 1000;
            *left %= 1000;
            whole
        };
        // Registered at the first report (at 0), so Prometheus sees the series start.
        metrics::counter!(name, &labels).increment(secs);
    }
    for &r in &d.recoveries_ms {
        metrics::histogram!("onair_qoe_recovery_seconds", &labels).record(r as f64 / 1000.0);
    }
}

/// Process CPU time (user + system) in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given; a zeroed rusage is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Resident memory in bytes (Linux; 0 elsewhere).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The exposition: the recorder's metrics (counters, histograms, gauges set here), then the
/// media plane's counters and histograms written from one snapshot.
pub fn render(app: &AppState) -> String {
    let rooms = app.rooms.all();
    let mut roles: std::collections::BTreeMap<&'static str, u64> =
        ["host", "cohost", "moderator", "viewer"].iter().map(|r| (*r, 0)).collect();
    let mut on_air = 0u64;
    for room in &rooms {
        let r = crate::live::room::lock(room);
        if r.is_live() {
            on_air += 1;
        }
        for (role, n) in r.role_counts() {
            *roles.entry(role.as_str()).or_default() += n;
        }
    }
    let s = app.sfu.stats();
    let feeds = app.studio.feeds();
    let mut out = String::with_capacity(16 * 1024);
    if let Some(h) = install() {
        metrics::gauge!("onair_rooms").set(rooms.len() as f64);
        metrics::gauge!("onair_lives_on_air").set(on_air as f64);
        for (role, n) in &roles {
            metrics::gauge!("onair_participants", "role" => *role).set(*n as f64);
        }
        out.push_str(&h.render());
    }
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
    };
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
    };
    counter(&mut out, "onair_datagrams_received_total", "UDP datagrams received on the media port", s.datagrams_in);
    counter(&mut out, "onair_datagrams_dropped_total", "Datagrams dropped (unknown sender, malformed, full queue)", s.datagrams_dropped);
    counter(&mut out, "onair_rtp_packets_received_total", "RTP packets received from publishers", s.rtp_in);
    counter(&mut out, "onair_rtp_packets_sent_total", "RTP packets forwarded to viewers", s.rtp_out);
    counter(&mut out, "onair_rtp_bytes_received_total", "Bytes received on the media port", s.bytes_in);
    counter(&mut out, "onair_rtp_bytes_sent_total", "Bytes sent on the media port", s.bytes_out);
    counter(&mut out, "onair_nacks_received_total", "Packets viewers asked again (NACK)", s.nacked);
    counter(&mut out, "onair_rtp_retransmitted_packets_total", "NACKed packets resent (RTX)", s.retransmitted);
    counter(&mut out, "onair_plis_sent_total", "Picture loss indications sent to publishers", s.plis_sent);
    counter(&mut out, "onair_firs_received_total", "Full intra requests received from viewers", s.firs_received);
    counter(&mut out, "onair_keyframe_requests_total", "Keyframe requests (viewers' PLI/FIR, joins, layer switches)", s.keyframe_requests);
    counter(
        &mut out,
        "onair_keyframe_replays_total",
        "Viewers' video started from a kept picture instead of a keyframe request",
        s.keyframe_replays,
    );
    counter(&mut out, "onair_layer_switches_total", "Simulcast layer changes of viewers' forwarded video", s.layer_switches);
    counter(&mut out, "onair_media_session_errors_total", "Media sessions that failed", s.session_errors);
    gauge(&mut out, "onair_tracks", "Published tracks", s.tracks as f64);
    gauge(&mut out, "onair_media_sessions", "Peer connections", s.sessions as f64);
    gauge(&mut out, "onair_studio_feeds", "Studio feeds (RTMP) connected", feeds.iter().filter(|f| f.connected).count() as f64);
    let _ = write!(
        out,
        "# HELP onair_process_cpu_seconds_total CPU time of the onair process\n# TYPE onair_process_cpu_seconds_total counter\nonair_process_cpu_seconds_total {}\n",
        process_cpu_seconds()
    );
    gauge(&mut out, "onair_process_resident_memory_bytes", "Resident memory of the onair process", resident_bytes() as f64);
    gauge(&mut out, "onair_node_cores", "CPU cores this node may use", cores() as f64);
    let bounds: Vec<f64> = sfu::metrics::DELAY_BOUNDS_US.iter().map(|b| *b as f64 / 1e6).collect();
    histogram(
        &mut out,
        "onair_forwarding_delay_seconds",
        "A packet's arrival to its copies' hand-off to the socket",
        &bounds,
        &s.forwarding_delay.counts,
        s.forwarding_delay.sum_us as f64 / 1e6,
    );
    let (counts, sum) = sfu::metrics::ESTIMATES.snapshot();
    let bounds: Vec<f64> = sfu::metrics::ESTIMATE_BOUNDS_BPS.iter().map(|b| *b as f64).collect();
    histogram(
        &mut out,
        "onair_bandwidth_estimate_bps",
        "Viewers' bandwidth estimates, sampled at each layer allocation",
        &bounds,
        &counts,
        sum as f64,
    );
    let delays: Vec<f64> =
        feeds.iter().filter(|f| f.connected && f.stats.video_delay.count > 0).map(|f| f.stats.video_delay.p50_us as f64 / 1e6).collect();
    gauge(
        &mut out,
        "onair_studio_bridge_delay_seconds",
        "Largest median RTMP-to-RTP bridge delay of the connected studio feeds",
        delays.iter().copied().fold(0.0, f64::max),
    );
    out
}

/// A histogram from per-bucket counts (the last bucket is +Inf).
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    let mut cumulative = 0;
    for (i, c) in counts.iter().enumerate() {
        cumulative += c;
        match bounds.get(i) {
            Some(b) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = write!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
}
