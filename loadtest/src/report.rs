//! The numbers of a run: built from the engine's per-viewer results, the delay histogram, and
//! the server's /proc and /api/stats samples; printed as a table, written as JSON and an SVG chart.

use crate::chat::ChatLive;
use crate::engine::{Live, Sample, ViewerResult};
use crate::server::ProcSample;
use crate::{Scenario, Window};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

pub fn percentiles(mut v: Vec<f64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Some(Percentiles { p50: at(0.5), p95: at(0.95), p99: at(0.99) })
}

fn histogram_percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p95: h.value_at_quantile(0.95) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// One measured window of a run with chat load: first without chat, then with it (same server,
/// same viewers), so the two rows compare.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    pub duration_s: f64,
    /// Forwarding delay over the window (ms).
    pub delay_ms: Option<Percentiles>,
    pub delay_max_ms: f64,
    /// Loss over the window: sequence numbers that came due in it and never arrived (%).
    pub loss_percent: f64,
    pub packets_received_per_s: f64,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_us_per_received_packet: Option<f64>,
    pub harness_cpu_cores: Option<f64>,
    /// The rest of the machine over the window (cores): every process's CPU less the server's
    /// and the harness's. Well above zero, the run shared its cores with other work.
    pub other_cpu_cores: Option<f64>,
    /// Chat figures of the window (the chat phase only).
    pub comments_sent_per_s: Option<f64>,
    pub fanout_per_s: Option<f64>,
    pub comment_delivery_p99_ms: Option<f64>,
}

/// The conversation under load.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatFigures {
    pub comments_per_sec_asked: f64,
    pub comment_senders: usize,
    pub reacting_viewers: usize,
    /// Seconds the chat load ran (the window, and the few ms around it to start and stop).
    pub chat_seconds: f64,
    pub comments_sent: u64,
    pub comments_sent_per_s: f64,
    pub taps_sent_per_s: f64,
    /// Error codes the server answered with (rate_limited and others), and their count.
    pub errors: BTreeMap<String, u64>,
    pub rate_limited: u64,
    /// Comments sent less those answered with an error.
    pub comments_accepted: u64,
    /// Viewers listening at the end.
    pub listening_viewers: u64,
    /// Accepted comments × listening viewers: what should have arrived.
    pub deliveries_expected: u64,
    /// Comments of this harness that viewers received (within 3 s of the load's end).
    pub deliveries: u64,
    pub deliveries_missing: u64,
    /// Other comments viewers received (history, other clients).
    pub foreign_comments: u64,
    /// A comment's send → a viewer's receipt (ms), every delivery.
    pub delivery_ms: Option<Percentiles>,
    pub delivery_max_ms: f64,
    /// Chat messages viewers received per second over the window: comments + reactions sums.
    pub fanout_per_s: f64,
    pub comment_messages_per_s: f64,
    pub reactions_messages_per_s: f64,
    /// Server CPU with chat − without (cores), from the two phases.
    pub extra_server_cores: Option<f64>,
    /// That extra CPU per chat message fanned out (µs).
    pub server_cpu_us_per_fanout_message: Option<f64>,
}

fn cores(pair: &Option<(ProcSample, ProcSample)>) -> Option<f64> {
    pair.as_ref().map(|(a, b)| (b.cpu_secs - a.cpu_secs) / b.at.duration_since(a.at).as_secs_f64().max(1e-6))
}

/// The media figures of one window.
pub fn phase(name: &str, w: &Window) -> Phase {
    let secs = w.took.as_secs_f64().max(1e-6);
    let expected = w.media.expected.saturating_sub(w.media_before.expected);
    let received = w.media.received.saturating_sub(w.media_before.received);
    Phase {
        name: name.to_owned(),
        duration_s: secs,
        delay_ms: histogram_percentiles(&w.media.delay),
        delay_max_ms: w.media.delay.max() as f64 / 1000.0,
        loss_percent: if expected == 0 { 0.0 } else { expected.saturating_sub(received) as f64 * 100.0 / expected as f64 },
        packets_received_per_s: w.received as f64 / secs,
        server_cpu_cores: cores(&w.cpu),
        server_cpu_us_per_received_packet: w
            .cpu
            .as_ref()
            .filter(|_| w.received > 0)
            .map(|(a, b)| (b.cpu_secs - a.cpu_secs) * 1e6 / w.received as f64),
        harness_cpu_cores: cores(&w.harness),
        other_cpu_cores: w
            .machine
            .zip(cores(&w.cpu))
            .zip(cores(&w.harness))
            .map(|(((a, b), server), harness)| (b - a) / secs - server - harness),
        ..Default::default()
    }
}

/// The chat figures of the chat window `w` (the load ran `chat_for`), and its phase row;
/// `baseline` is the window without chat, for the server CPU chat costs.
pub fn chat(s: &Scenario, w: &Window, live: &ChatLive, chat_for: Duration, baseline: Option<&Phase>) -> (ChatFigures, Phase) {
    let secs = w.took.as_secs_f64().max(1e-6);
    let on = chat_for.as_secs_f64().max(1e-6);
    let now = live.counts();
    let (a, b) = w.chat.unwrap_or_default();
    let errors = live.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let error_count: u64 = errors.values().sum();
    let accepted = now.comments_sent.saturating_sub(error_count);
    let listening = live.listening.load(Ordering::Relaxed);
    let delivery = live.delivery.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let comment_messages = (b.comments_received - a.comments_received) as f64 / secs;
    let reactions_messages = (b.reactions_received - a.reactions_received) as f64 / secs;
    let fanout = comment_messages + reactions_messages;
    let mut row = phase("media + chat", w);
    let extra = row.server_cpu_cores.zip(baseline.and_then(|p| p.server_cpu_cores)).map(|(with, without)| with - without);
    let expected = accepted * listening;
    let figures = ChatFigures {
        comments_per_sec_asked: s.chat.comments_per_sec,
        comment_senders: s.chat.senders(s.viewers),
        reacting_viewers: s.chat.reactors(s.viewers),
        chat_seconds: on,
        comments_sent: now.comments_sent,
        comments_sent_per_s: now.comments_sent as f64 / on,
        taps_sent_per_s: now.taps_sent as f64 / on,
        rate_limited: errors.get("rate_limited").copied().unwrap_or(0),
        errors,
        comments_accepted: accepted,
        listening_viewers: listening,
        deliveries_expected: expected,
        deliveries: now.comments_received,
        deliveries_missing: expected.saturating_sub(now.comments_received),
        foreign_comments: live.foreign_comments.load(Ordering::Relaxed),
        delivery_ms: histogram_percentiles(&delivery),
        delivery_max_ms: delivery.max() as f64 / 1000.0,
        fanout_per_s: fanout,
        comment_messages_per_s: comment_messages,
        reactions_messages_per_s: reactions_messages,
        extra_server_cores: extra,
        server_cpu_us_per_fanout_message: extra.filter(|_| fanout > 0.0).map(|e| e * 1e6 / fanout),
    };
    row.comments_sent_per_s = Some(figures.comments_sent_per_s);
    row.fanout_per_s = Some(fanout);
    row.comment_delivery_p99_ms = figures.delivery_ms.as_ref().map(|p| p.p99);
    (figures, row)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// Server CPU time per forwarded packet over the window (µs).
    pub cpu_us_per_packet: Option<f64>,
    /// Server CPU time per packet the viewers received (µs): comparable across servers.
    pub cpu_us_per_received_packet: Option<f64>,
    /// Packets all viewers received per second over the window.
    pub packets_received_per_s: f64,
    /// Server CPU use over the window (1.0 = one core).
    pub cpu_cores: Option<f64>,
    pub packets_forwarded_per_s: Option<f64>,
    pub rss_mib: Option<f64>,
    /// (RSS after the ramp − RSS before the viewers) / viewers joined.
    pub rss_kib_per_viewer: Option<f64>,
    pub keyframe_requests: Option<u64>,
    pub plis_sent: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub viewers: usize,
    pub publishers: usize,
    pub layer: String,
    pub duration_s: f64,
    pub joined: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// Viewers that connected media and received packets.
    pub receiving: usize,
    /// WebSocket connect → first subscriber offer (ms).
    pub offer_ms: Option<Percentiles>,
    /// WebSocket connect → ICE and DTLS connected (ms).
    pub media_connected_ms: Option<Percentiles>,
    /// WebSocket connect → first RTP packet (ms).
    pub first_rtp_ms: Option<Percentiles>,
    /// WebSocket connect → first key frame (ms).
    pub first_keyframe_ms: Option<Percentiles>,
    /// Lost / expected over every viewer's streams (%), from sequence gaps.
    pub loss_percent: f64,
    pub duplicates: u64,
    pub jitter_ms: f64,
    /// Publisher send time → viewer receipt (ms), over the measured window (ramp excluded).
    pub delay_ms: Option<Percentiles>,
    pub delay_max_ms: f64,
    pub kbit_per_viewer: f64,
    pub packets_received: u64,
    /// RTP packets viewers opened on the harness's lean path (`--lean-viewers`), RTX and
    /// padding included.
    pub lean_packets: u64,
    /// Viewers that asked the server for its view as they left, and of those, the ones its
    /// estimator had an estimate for from their transport-wide CC reports; the median estimate.
    pub views: usize,
    pub estimated: usize,
    pub estimate_p50_kbps: Option<u64>,
    /// Viewers by the layer of their last video packet: [low, mid, high, none].
    pub layer_distribution: [usize; 4],
    pub server: ServerFigures,
    /// The harness's own CPU use over the window (1.0 = one core): near 1.0 on a pinned core
    /// means the harness, not the server, was the limit.
    pub harness_cpu_cores: f64,
    /// With chat load: the window without chat, then the one with it.
    pub phases: Vec<Phase>,
    pub chat: Option<ChatFigures>,
    /// The seed KPIs from the viewers' own measurements, and as the server added up their
    /// reports (`--admin-url`).
    pub kpis: Option<crate::kpis::Kpis>,
    pub server_kpis: Option<crate::kpis::Kpis>,
    /// The fault scenarios played after the window (`--fault`), in order.
    pub faults: Vec<crate::fault::FaultReport>,
    pub samples: Vec<Sample>,
}

/// The report of a run; the server and delay figures are those of `w`, the last window.
pub fn build(
    s: &Scenario,
    joined: usize,
    failures: BTreeMap<String, usize>,
    results: Vec<ViewerResult>,
    live: &Live,
    before: Option<ProcSample>,
    w: &Window,
) -> Report {
    let (window, received_in_window) = (w.took, w.received);
    let (cpu0, cpu1) = (w.cpu.map(|c| c.0), w.cpu.map(|c| c.1));
    let (sfu0, sfu1): (&Option<Value>, &Option<Value>) = (&w.sfu.0, &w.sfu.1);
    let receiving: Vec<&ViewerResult> = results.iter().filter(|r| r.packets > 0).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let expected: u64 = results.iter().map(|r| r.expected).sum();
    let lost: u64 = results.iter().map(|r| r.lost).sum();
    let mut layers = [0usize; 4];
    for r in &results {
        layers[r.last_layer.map_or(3, |l| (l as usize).min(2))] += 1;
    }
    let delay = &w.media.delay;
    let counter = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v[k].as_u64());
    let delta = |k: &str| Some(counter(sfu1, k)?.saturating_sub(counter(sfu0, k)?));
    let mut server = ServerFigures { keyframe_requests: delta("keyframe_requests"), plis_sent: delta("plis_sent"), ..Default::default() };
    let secs = window.as_secs_f64().max(1e-6);
    server.packets_received_per_s = received_in_window as f64 / secs;
    if let (Some(a), Some(b)) = (cpu0, cpu1)
        && received_in_window > 0
    {
        server.cpu_us_per_received_packet = Some((b.cpu_secs - a.cpu_secs) * 1e6 / received_in_window as f64);
        server.cpu_cores = Some((b.cpu_secs - a.cpu_secs) / b.at.duration_since(a.at).as_secs_f64().max(1e-6));
    }
    if let Some(out) = delta("rtp_out") {
        server.packets_forwarded_per_s = Some(out as f64 / secs);
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            let cpu = b.cpu_secs - a.cpu_secs;
            server.cpu_cores = Some(cpu / b.at.duration_since(a.at).as_secs_f64().max(1e-6));
            if out > 0 {
                server.cpu_us_per_packet = Some(cpu * 1e6 / out as f64);
            }
        }
    }
    if let Some(b) = cpu1 {
        server.rss_mib = Some(b.rss_kib as f64 / 1024.0);
        if let Some(a) = before
            && joined > 0
        {
            server.rss_kib_per_viewer = Some((b.rss_kib as f64 - a.rss_kib as f64) / joined as f64);
        }
    }
    // Estimates from feedback only: a viewer whose server got no TWCC report has none.
    let mut estimates: Vec<u64> = results.iter().filter_map(|r| r.server_view).filter(|(fb, _)| *fb > 0).filter_map(|(_, e)| e).collect();
    estimates.sort_unstable();
    Report {
        viewers: s.viewers,
        publishers: s.publishers,
        layer: format!("{:?}", s.layer).to_lowercase(),
        duration_s: secs,
        joined,
        failed: failures.values().sum(),
        failures,
        receiving: receiving.len(),
        offer_ms: percentiles(results.iter().filter_map(|r| r.offer).map(ms).collect()),
        media_connected_ms: percentiles(results.iter().filter_map(|r| r.media_connected).map(ms).collect()),
        first_rtp_ms: percentiles(results.iter().filter_map(|r| r.first_rtp).map(ms).collect()),
        first_keyframe_ms: percentiles(results.iter().filter_map(|r| r.first_keyframe).map(ms).collect()),
        loss_percent: if expected == 0 { 0.0 } else { lost as f64 * 100.0 / expected as f64 },
        duplicates: results.iter().map(|r| r.duplicates).sum(),
        jitter_ms: if receiving.is_empty() { 0.0 } else { receiving.iter().map(|r| r.jitter_ms).sum::<f64>() / receiving.len() as f64 },
        delay_ms: histogram_percentiles(delay),
        delay_max_ms: delay.max() as f64 / 1000.0,
        kbit_per_viewer: if receiving.is_empty() {
            0.0
        } else {
            receiving.iter().map(|r| r.bytes as f64 * 8.0).sum::<f64>() / receiving.len() as f64 / 1000.0 / live_seconds(live).max(1.0)
        },
        packets_received: results.iter().map(|r| r.packets).sum(),
        lean_packets: results.iter().map(|r| r.lean_packets).sum(),
        views: results.iter().filter(|r| r.server_view.is_some()).count(),
        estimated: estimates.len(),
        estimate_p50_kbps: estimates.get(estimates.len() / 2).map(|b| b / 1000),
        layer_distribution: layers,
        server,
        harness_cpu_cores: cores(&w.harness).unwrap_or(0.0),
        phases: Vec::new(),
        faults: Vec::new(),
        chat: None,
        kpis: None,
        server_kpis: None,
        samples: live.samples.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

/// Seconds the engine ran (its sample count).
fn live_seconds(live: &Live) -> f64 {
    live.samples.lock().unwrap_or_else(|p| p.into_inner()).len() as f64
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "—".into())
}

/// The loss above which a run did not hold (%).
pub const HELD_MAX_LOSS_PERCENT: f64 = 1.0;
/// The forwarding delay p99 above which a run did not hold (ms): a server that keeps up stays
/// within tens of milliseconds; one that does not falls behind by seconds.
pub const HELD_MAX_DELAY_P99_MS: f64 = 250.0;

impl Report {
    /// Whether the server held this load: every viewer joined and received media, all of them on
    /// the top layer at the end (a server short of CPU would otherwise look fine by sending less),
    /// loss under 1 % and delay p99 under 250 ms. `Err` says the first thing that failed.
    pub fn held(&self) -> Result<(), String> {
        if self.joined < self.viewers || self.receiving < self.viewers {
            return Err(format!("{} of {} joined, {} receiving", self.joined, self.viewers, self.receiving));
        }
        if self.layer_distribution[2] < self.viewers {
            return Err(format!("{} of {} on the top layer", self.layer_distribution[2], self.viewers));
        }
        if self.loss_percent >= HELD_MAX_LOSS_PERCENT {
            return Err(format!("loss {:.2} %", self.loss_percent));
        }
        match &self.delay_ms {
            None => Err("no delay measured".into()),
            Some(d) if d.p99 > HELD_MAX_DELAY_P99_MS => Err(format!("delay p99 {:.0} ms", d.p99)),
            Some(_) => Ok(()),
        }
    }

    /// The final table.
    pub fn table(&self) -> String {
        let p = |x: &Option<Percentiles>| {
            x.as_ref().map(|p| format!("{:.1} / {:.1} / {:.1}", p.p50, p.p95, p.p99)).unwrap_or_else(|| "—".into())
        };
        let s = &self.server;
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<38} {v}\n"));
        row("viewers (joined / failed / receiving)", format!("{} / {} / {}", self.joined, self.failed, self.receiving));
        for (reason, n) in &self.failures {
            row("  failure", format!("{n} × {reason}"));
        }
        row("publishers, layer choice", format!("{}, {}", self.publishers, self.layer));
        row("ws connect → server offer (ms)", p(&self.offer_ms));
        row("ws connect → ICE+DTLS connected (ms)", p(&self.media_connected_ms));
        row("ws connect → first RTP p50/p95/p99 (ms)", p(&self.first_rtp_ms));
        row("ws connect → first keyframe (ms)", p(&self.first_keyframe_ms));
        row("forwarding delay p50/p95/p99 (ms)", p(&self.delay_ms));
        row("forwarding delay max (ms)", format!("{:.1}", self.delay_max_ms));
        row("loss (sequence gaps, %)", format!("{:.3}", self.loss_percent));
        row("jitter (ms)", format!("{:.2}", self.jitter_ms));
        row("bitrate per viewer (kbit/s)", format!("{:.0}", self.kbit_per_viewer));
        row("layers low / mid / high / none", format!("{:?}", self.layer_distribution));
        if self.views > 0 {
            let p50 = self.estimate_p50_kbps.map_or("-".to_string(), |k| k.to_string());
            row("server's estimate from TWCC: viewers, p50 kbit/s", format!("{} of {}, {p50}", self.estimated, self.views));
        }
        if self.lean_packets > 0 {
            row("packets opened by lean viewers", self.lean_packets.to_string());
        }
        row("server packets forwarded /s", opt(s.packets_forwarded_per_s, 0));
        row("server CPU µs per forwarded packet", opt(s.cpu_us_per_packet, 2));
        row("packets received by viewers /s", format!("{:.0}", s.packets_received_per_s));
        row("server CPU µs per received packet", opt(s.cpu_us_per_received_packet, 2));
        row("server CPU (cores)", opt(s.cpu_cores, 2));
        if let Some(k) = &self.kpis {
            for (label, value) in crate::kpis::rows(k, self.server_kpis.as_ref()) {
                row(&label, value);
            }
        }
        row("server RSS (MiB)", opt(s.rss_mib, 1));
        row("server RSS per viewer (KiB)", opt(s.rss_kib_per_viewer, 1));
        row("harness CPU (cores)", format!("{:.2}", self.harness_cpu_cores));
        if let Some(c) = &self.chat {
            let ms = |x: &Option<Percentiles>, max: f64| {
                x.as_ref().map(|p| format!("{:.1} / {:.1} / {:.1} / {max:.1}", p.p50, p.p95, p.p99)).unwrap_or_else(|| "—".into())
            };
            row(
                "chat: senders, reacting viewers",
                format!("{} commenting ({:.0}/s asked), {} reacting", c.comment_senders, c.comments_per_sec_asked, c.reacting_viewers),
            );
            row("comments sent /s, reaction taps /s", format!("{:.1}, {:.1}", c.comments_sent_per_s, c.taps_sent_per_s));
            row(
                "errors (rate_limited / all)",
                format!(
                    "{} / {}{}",
                    c.rate_limited,
                    c.errors.values().sum::<u64>(),
                    if c.errors.is_empty() { String::new() } else { format!(" {:?}", c.errors) }
                ),
            );
            row(
                "comment deliveries (got / expected)",
                format!("{} / {} ({} missing)", c.deliveries, c.deliveries_expected, c.deliveries_missing),
            );
            row("comment delivery p50/p95/p99/max (ms)", ms(&c.delivery_ms, c.delivery_max_ms));
            row(
                "chat msgs to viewers /s (comments+reactions)",
                format!("{:.0} ({:.0} + {:.0})", c.fanout_per_s, c.comment_messages_per_s, c.reactions_messages_per_s),
            );
            row("server CPU for chat (cores)", opt(c.extra_server_cores, 3));
            row("server CPU µs per chat message", opt(c.server_cpu_us_per_fanout_message, 2));
        }
        row(
            "keyframe requests / PLIs sent",
            format!(
                "{} / {}",
                s.keyframe_requests.map_or("—".into(), |v| v.to_string()),
                s.plis_sent.map_or("—".into(), |v| v.to_string())
            ),
        );
        for f in &self.faults {
            let label = format!("fault {}", f.kind.name());
            row(&format!("{label}: affected / recovered / lost"), format!("{} / {} / {}", f.affected, f.recovered, f.lost));
            if let (Some(r), Some(j)) = (f.resumed, f.rejoined) {
                row(&format!("{label}: resumed / joined afresh"), format!("{r} / {j}"));
            }
            row(
                &format!("{label}: recovery p50/p95/p99/max (ms)"),
                f.recovery_ms
                    .as_ref()
                    .map(|p| format!("{:.0} / {:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99, f.recovery_max_ms.unwrap_or(p.p99)))
                    .unwrap_or_else(|| "—".into()),
            );
        }
        if !self.phases.is_empty() {
            t.push_str(&self.phase_table());
        }
        t
    }

    /// The windows of a run with chat load, one row each: the same server and viewers without
    /// chat and with it.
    pub fn phase_table(&self) -> String {
        let mut t = String::from(
            "  window          delay p50/p99/max ms   loss %   recv pkt/s   server cores   µs/pkt   harness cores   other cores   comments/s   chat msgs/s   comment p99 ms\n",
        );
        for p in &self.phases {
            let d =
                p.delay_ms.as_ref().map(|d| format!("{:.1} / {:.1} / {:.0}", d.p50, d.p99, p.delay_max_ms)).unwrap_or_else(|| "—".into());
            t.push_str(&format!(
                "  {:<15} {:>20} {:>8.3} {:>12.0} {:>14} {:>8} {:>15} {:>13} {:>12} {:>13} {:>16}\n",
                p.name,
                d,
                p.loss_percent,
                p.packets_received_per_s,
                opt(p.server_cpu_cores, 3),
                opt(p.server_cpu_us_per_received_packet, 2),
                opt(p.harness_cpu_cores, 2),
                opt(p.other_cpu_cores, 2),
                opt(p.comments_sent_per_s, 1),
                opt(p.fanout_per_s, 0),
                opt(p.comment_delivery_p99_ms, 1),
            ));
        }
        t
    }

    /// An SVG chart: forwarding delay (p50, p99) and packets received per second over time.
    pub fn chart(&self, path: &std::path::Path, title: &str) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(320);
        let t_max = self.samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
        let d_max = self.samples.iter().map(|s| s.delay_p99_ms).fold(1.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&top)
            .caption(format!("{title}: forwarding delay (publisher send → viewer receipt)"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..d_max)?;
        c.configure_mesh().x_desc("time (s)").y_desc("ms").draw()?;
        c.draw_series(LineSeries::new(self.samples.iter().map(|s| (s.t, s.delay_p50_ms)), &BLUE))?
            .label("p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.draw_series(LineSeries::new(self.samples.iter().map(|s| (s.t, s.delay_p99_ms)), &RED))?
            .label("p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        let p_max = self.samples.iter().map(|s| s.packets_per_s as f64).fold(1.0, f64::max) * 1.1;
        let v_max = self.samples.iter().map(|s| s.viewers_receiving as f64).fold(1.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&bottom)
            .caption("packets received per second (all viewers) and viewers receiving", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..p_max)?
            .set_secondary_coord(0.0..t_max, 0.0..v_max);
        c.configure_mesh().x_desc("time (s)").y_desc("packets/s").draw()?;
        c.configure_secondary_axes().y_desc("viewers").draw()?;
        c.draw_series(LineSeries::new(self.samples.iter().map(|s| (s.t, s.packets_per_s as f64)), &GREEN))?
            .label("packets/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        c.draw_secondary_series(LineSeries::new(self.samples.iter().map(|s| (s.t, s.viewers_receiving as f64)), &MAGENTA))?
            .label("viewers receiving")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_run(viewers: usize) -> Report {
        Report {
            viewers,
            joined: viewers,
            receiving: viewers,
            layer_distribution: [0, 0, viewers, 0],
            delay_ms: Some(Percentiles { p50: 5.0, p95: 10.0, p99: 20.0 }),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_holds_only_when_everyone_gets_the_top_layer_in_time_and_whole() {
        assert_eq!(held_run(300).held(), Ok(()));
        let mut r = held_run(300);
        r.joined = 299;
        assert_eq!(r.held(), Err("299 of 300 joined, 300 receiving".into()));
        let mut r = held_run(300);
        r.receiving = 299;
        assert!(r.held().is_err());
        let mut r = held_run(300);
        r.layer_distribution = [0, 1, 299, 0];
        assert_eq!(r.held(), Err("299 of 300 on the top layer".into()));
        // The limits, at and just past their edges.
        let mut r = held_run(300);
        r.loss_percent = HELD_MAX_LOSS_PERCENT - 0.01;
        assert_eq!(r.held(), Ok(()));
        r.loss_percent = HELD_MAX_LOSS_PERCENT;
        assert_eq!(r.held(), Err("loss 1.00 %".into()));
        let mut r = held_run(300);
        r.delay_ms = Some(Percentiles { p50: 5.0, p95: 10.0, p99: HELD_MAX_DELAY_P99_MS });
        assert_eq!(r.held(), Ok(()));
        r.delay_ms = Some(Percentiles { p50: 5.0, p95: 10.0, p99: HELD_MAX_DELAY_P99_MS + 1.0 });
        assert_eq!(r.held(), Err("delay p99 251 ms".into()));
        r.delay_ms = None;
        assert!(r.held().is_err());
    }
}
