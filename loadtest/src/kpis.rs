//! The seed KPIs twice: from the viewers' own measurements (frames as they arrived) and from the
//! server (the same viewers' `qoe` reports, added up by Onair, read from its admin API), side by
//! side. They are the same numbers by two roads, so they must agree: counts exactly, ratios within
//! [`RATIO_BOUND`], percentiles within [`PERCENTILE_BOUND_MS`] (see [`agree`]).

use crate::engine::ViewerResult;
use serde_json::Value;

use signaling::live::qoe::state::{STARTUP_GIVE_UP_MS, STARTUP_TARGET_MS, quantile};
/// Freeze ratios may differ by this much (absolute): the viewers' watch time runs to their
/// close, the server's to their last report, a few milliseconds earlier.
pub const RATIO_BOUND: f64 = 0.005;
/// First-frame and recovery percentiles may differ by this much (the server keeps them as whole
/// milliseconds from the reports).
pub const PERCENTILE_BOUND_MS: u64 = 1;

/// The server's own KPI type: both roads fill the same fields.
pub use signaling::live::qoe::Kpis;

/// The viewers' own KPIs.
pub fn from_viewers(results: &[ViewerResult]) -> Kpis {
    let viewers: Vec<&ViewerResult> = results.iter().filter(|r| !r.publisher && r.offer.is_some()).collect();
    let mut k = Kpis { viewers: viewers.len() as u64, ..Kpis::default() };
    let (mut ok, mut freeze_ms, mut watch_ms) = (0u64, 0u64, 0u64);
    let mut firsts = Vec::new();
    let mut recoveries = Vec::new();
    for r in &viewers {
        let first = r.first_keyframe.map(|d| d.as_millis() as u64);
        let watched = r.watch.as_millis() as u64;
        match first {
            Some(f) => {
                k.startups += 1;
                ok += u64::from(f <= STARTUP_TARGET_MS);
                firsts.push(f);
            }
            None if watched >= STARTUP_GIVE_UP_MS => k.startups += 1,
            None => {}
        }
        k.freezes += r.qoe.freezes;
        freeze_ms += r.qoe.freeze_ms;
        watch_ms += watched;
        recoveries.extend(r.qoe.all_recoveries_ms.iter().copied());
    }
    k.startup_reliability = (k.startups > 0).then(|| ok as f64 / k.startups as f64);
    k.first_frame_p50_ms = quantile(firsts.clone(), 0.5);
    k.first_frame_p95_ms = quantile(firsts, 0.95);
    k.recovery_p50_ms = quantile(recoveries.clone(), 0.5);
    k.recovery_p95_ms = quantile(recoveries, 0.95);
    k.freeze_ratio = (watch_ms > 0).then(|| freeze_ms as f64 / watch_ms as f64);
    k.freezes_per_viewer_hour = (watch_ms > 0).then(|| k.freezes as f64 / (watch_ms as f64 / 3_600_000.0));
    k.watch_secs = watch_ms as f64 / 1000.0;
    k
}

/// The server's KPIs of the loadtest's viewers in `room`, from `GET /admin/api/overview`.
pub fn from_overview(overview: &Value, room: &str) -> Option<Kpis> {
    let lives = overview["lives"].as_array()?.iter().chain(overview["past"].as_array().into_iter().flatten());
    let live = lives.into_iter().find(|l| l["room"] == room)?;
    let c = live["kpis"]["cohorts"].as_array()?.iter().find(|c| c["client"] == "loadtest")?;
    let u = |k: &str| c[k].as_u64();
    Some(Kpis {
        viewers: u("viewers").unwrap_or(0),
        startups: u("startups").unwrap_or(0),
        startup_reliability: c["startup_reliability"].as_f64(),
        first_frame_p50_ms: u("first_frame_p50_ms"),
        first_frame_p95_ms: u("first_frame_p95_ms"),
        freeze_ratio: c["freeze_ratio"].as_f64(),
        freezes: u("freezes").unwrap_or(0),
        recovery_p50_ms: u("recovery_p50_ms"),
        recovery_p95_ms: u("recovery_p95_ms"),
        watch_secs: c["watch_secs"].as_f64().unwrap_or(0.0),
        freezes_per_viewer_hour: c["freezes_per_viewer_hour"].as_f64(),
        ..Kpis::default()
    })
}

/// Whether `server` agrees with `own` (the viewers'), and where not.
pub fn agree(own: &Kpis, server: &Kpis) -> Result<(), Vec<String>> {
    let mut off = Vec::new();
    let mut same = |what: &str, a: u64, b: u64| {
        if a != b {
            off.push(format!("{what}: {a} vs {b}"));
        }
    };
    same("viewers", own.viewers, server.viewers);
    same("startups", own.startups, server.startups);
    same("freezes", own.freezes, server.freezes);
    let ratio = |what: &str, a: Option<f64>, b: Option<f64>, off: &mut Vec<String>| match (a, b) {
        (Some(a), Some(b)) if (a - b).abs() <= RATIO_BOUND => {}
        (None, None) => {}
        (a, b) => off.push(format!("{what}: {a:?} vs {b:?}")),
    };
    ratio("startup reliability", own.startup_reliability, server.startup_reliability, &mut off);
    ratio("freeze ratio", own.freeze_ratio, server.freeze_ratio, &mut off);
    let ms = |what: &str, a: Option<u64>, b: Option<u64>, off: &mut Vec<String>| match (a, b) {
        (Some(a), Some(b)) if a.abs_diff(b) <= PERCENTILE_BOUND_MS => {}
        (None, None) => {}
        (a, b) => off.push(format!("{what}: {a:?} vs {b:?}")),
    };
    ms("first frame p50", own.first_frame_p50_ms, server.first_frame_p50_ms, &mut off);
    ms("first frame p95", own.first_frame_p95_ms, server.first_frame_p95_ms, &mut off);
    ms("recovery p50", own.recovery_p50_ms, server.recovery_p50_ms, &mut off);
    ms("recovery p95", own.recovery_p95_ms, server.recovery_p95_ms, &mut off);
    if off.is_empty() { Ok(()) } else { Err(off) }
}

/// Rows for the report's table: the viewers' figure / the server's.
pub fn rows(viewers: &Kpis, server: Option<&Kpis>) -> Vec<(String, String)> {
    let pct = |v: Option<f64>| v.map(|x| format!("{:.2}", x * 100.0)).unwrap_or_else(|| "—".into());
    let ms = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "—".into());
    let both = |f: &dyn Fn(&Kpis) -> String| format!("{} / {}", f(viewers), server.map(f).unwrap_or_else(|| "(no server figures)".into()));
    let mut out = vec![
        ("KPIs: viewers reporting (own / server)".into(), both(&|k| k.viewers.to_string())),
        ("startup reliability % (own / server)".into(), both(&|k| pct(k.startup_reliability))),
        ("first frame p50, p95 ms (own / server)".into(), both(&|k| format!("{}, {}", ms(k.first_frame_p50_ms), ms(k.first_frame_p95_ms)))),
        ("freeze ratio % (own / server)".into(), both(&|k| pct(k.freeze_ratio))),
        ("freezes (own / server)".into(), both(&|k| k.freezes.to_string())),
        ("recovery p50, p95 ms (own / server)".into(), both(&|k| format!("{}, {}", ms(k.recovery_p50_ms), ms(k.recovery_p95_ms)))),
    ];
    if let Some(s) = server {
        let verdict = match agree(viewers, s) {
            Ok(()) => format!("agree (counts equal, ratios ±{RATIO_BOUND}, percentiles ±{PERCENTILE_BOUND_MS} ms)"),
            Err(off) => format!("DISAGREE: {}", off.join("; ")),
        };
        out.push(("KPIs agreement".into(), verdict));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Qoe;
    use std::time::{Duration, Instant};

    #[test]
    fn a_gap_is_a_freeze_by_chromiums_rule() {
        let mut q = Qoe::default();
        let mut t = Instant::now();
        for _ in 0..30 {
            q.frame(t);
            t += Duration::from_millis(33);
        }
        // 150 ms late is not yet a freeze (limit: max(3 × 33, 33 + 150) = 183 ms)...
        t += Duration::from_millis(117);
        q.frame(t);
        assert_eq!(q.freezes, 0);
        // ...half a second is.
        t += Duration::from_millis(500);
        q.frame(t);
        for _ in 0..10 {
            t += Duration::from_millis(33);
            q.frame(t);
        }
        assert_eq!((q.freezes, q.freeze_ms, q.recoveries_ms.clone()), (1, 500, vec![500]));
        assert_eq!(q.frames, 42);
    }

    #[test]
    fn viewers_and_server_agree_or_say_where_not() {
        let a = Kpis { viewers: 3, startups: 3, startup_reliability: Some(1.0), freeze_ratio: Some(0.010), freezes: 2, ..Kpis::default() };
        let mut b = a.clone();
        b.freeze_ratio = Some(0.012);
        assert!(agree(&a, &b).is_ok());
        b.freezes = 3;
        b.freeze_ratio = Some(0.02);
        let off = agree(&a, &b).err().unwrap_or_default();
        assert_eq!(off.len(), 2, "{off:?}");
    }
}
