//! The numbers of a run: built from the engine's per-viewer results, the delay histogram, and
//! the server's /proc and /api/stats samples; printed as a table, written as JSON and an SVG chart.

use crate::Scenario;
use crate::engine::{Live, Sample, ViewerResult};
use crate::server::ProcSample;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

fn percentiles(mut v: Vec<f64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Some(Percentiles { p50: at(0.5), p95: at(0.95), p99: at(0.99) })
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
    /// Viewers by the layer of their last video packet: [low, mid, high, none].
    pub layer_distribution: [usize; 4],
    pub server: ServerFigures,
    /// The harness's own CPU use over the window (1.0 = one core): near 1.0 on a pinned core
    /// means the harness, not the server, was the limit.
    pub harness_cpu_cores: f64,
    pub samples: Vec<Sample>,
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    s: &Scenario,
    joined: usize,
    failures: BTreeMap<String, usize>,
    results: Vec<ViewerResult>,
    live: &Live,
    window: Duration,
    received_in_window: u64,
    before: Option<ProcSample>,
    cpu0: Option<ProcSample>,
    cpu1: Option<ProcSample>,
    sfu0: Option<Value>,
    sfu1: Option<Value>,
) -> Report {
    let receiving: Vec<&ViewerResult> = results.iter().filter(|r| r.packets > 0).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let expected: u64 = results.iter().map(|r| r.expected).sum();
    let lost: u64 = results.iter().map(|r| r.lost).sum();
    let mut layers = [0usize; 4];
    for r in &results {
        layers[r.last_layer.map_or(3, |l| (l as usize).min(2))] += 1;
    }
    let delay = live.delay.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let counter = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v[k].as_u64());
    let delta = |k: &str| Some(counter(&sfu1, k)?.saturating_sub(counter(&sfu0, k)?));
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
        delay_ms: delay.as_ref().filter(|h| !h.is_empty()).map(|h| Percentiles {
            p50: h.value_at_quantile(0.5) as f64 / 1000.0,
            p95: h.value_at_quantile(0.95) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        }),
        delay_max_ms: delay.as_ref().map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0),
        kbit_per_viewer: if receiving.is_empty() {
            0.0
        } else {
            receiving.iter().map(|r| r.bytes as f64 * 8.0).sum::<f64>() / receiving.len() as f64 / 1000.0 / live_seconds(live).max(1.0)
        },
        packets_received: results.iter().map(|r| r.packets).sum(),
        layer_distribution: layers,
        server,
        harness_cpu_cores: 0.0,
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

impl Report {
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
        row("server packets forwarded /s", opt(s.packets_forwarded_per_s, 0));
        row("server CPU µs per forwarded packet", opt(s.cpu_us_per_packet, 2));
        row("packets received by viewers /s", format!("{:.0}", s.packets_received_per_s));
        row("server CPU µs per received packet", opt(s.cpu_us_per_received_packet, 2));
        row("server CPU (cores)", opt(s.cpu_cores, 2));
        row("server RSS (MiB)", opt(s.rss_mib, 1));
        row("server RSS per viewer (KiB)", opt(s.rss_kib_per_viewer, 1));
        row("harness CPU (cores)", format!("{:.2}", self.harness_cpu_cores));
        row(
            "keyframe requests / PLIs sent",
            format!(
                "{} / {}",
                s.keyframe_requests.map_or("—".into(), |v| v.to_string()),
                s.plis_sent.map_or("—".into(), |v| v.to_string())
            ),
        );
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
