//! A live's player QoE: each viewer's latest cumulative report, the startups, first frames and
//! recoveries, and the KPIs they add up to (docs/operations.md "KPIs"). Plain state: the caller
//! gives the time.

use crate::error::{AppError, ErrorCode};
use serde::Serialize;
use sfu::ParticipantId;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A first frame within this is a good startup.
pub const STARTUP_TARGET_MS: u64 = 2_000;
/// Watching this long without a first frame is a failed startup.
pub const STARTUP_GIVE_UP_MS: u64 = 10_000;
/// Reports closer together than this from one viewer are refused.
pub const MIN_REPORT_GAP: Duration = Duration::from_millis(2_000);
/// Viewers, first frames and recoveries one live keeps (beyond: the oldest samples stay, new
/// ones count in totals only).
const MAX_VIEWERS: usize = 100_000;
const MAX_SAMPLES: usize = 100_000;
/// Bounds of one report's fields.
const MAX_WATCH_MS: u64 = 48 * 3600 * 1000;
const MAX_RECOVERIES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    Browser,
    Loadtest,
    Other,
}

impl Client {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("browser") => Client::Browser,
            Some("loadtest") => Client::Loadtest,
            _ => Client::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Client::Browser => "browser",
            Client::Loadtest => "loadtest",
            Client::Other => "other",
        }
    }
}

/// One report, cumulative since the viewer joined (`recoveries_ms`: freezes that ended since the
/// previous report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QoeReport {
    pub first_frame_ms: Option<u64>,
    pub frames_decoded: u64,
    pub freezes: u64,
    pub freeze_ms: u64,
    pub recoveries_ms: Vec<u64>,
    pub layer: Option<String>,
    pub concealed_ms: u64,
    pub connection_changes: u64,
    pub watch_ms: u64,
}

impl QoeReport {
    /// Refuse what no player reports.
    pub fn check(&self) -> Result<(), AppError> {
        let bad = |m: &str| Err(AppError::new(ErrorCode::BadMessage, format!("qoe: {m}")));
        if self.watch_ms > MAX_WATCH_MS || self.first_frame_ms.is_some_and(|f| f > MAX_WATCH_MS) || self.freeze_ms > MAX_WATCH_MS {
            return bad("times must be at most 48 hours");
        }
        if self.recoveries_ms.len() > MAX_RECOVERIES || self.recoveries_ms.iter().any(|&r| r > 3_600_000) {
            return bad("at most 20 recoveries of at most an hour each");
        }
        if self.layer.as_ref().is_some_and(|l| l.len() > 16 || !l.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return bad("layer is a short name such as h");
        }
        if self.freezes > 1_000_000 || self.connection_changes > 1_000_000 || self.frames_decoded > 10_000_000_000 {
            return bad("a counter is out of range");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// First frame within the target.
    Ok,
    /// First frame, late.
    Slow,
    /// No first frame after [`STARTUP_GIVE_UP_MS`] of watching.
    Failed,
}

impl Startup {
    pub fn as_str(self) -> &'static str {
        match self {
            Startup::Ok => "ok",
            Startup::Slow => "slow",
            Startup::Failed => "failed",
        }
    }
}

type Cohort = (String, Client);

struct Viewer {
    cohort: Cohort,
    last: QoeReport,
    startup: Option<Startup>,
    at: Instant,
}

/// What one report added (for the metrics).
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub startup: Option<Startup>,
    pub first_frame_ms: Option<u64>,
    pub freezes: u64,
    pub freeze_ms: u64,
    pub watch_ms: u64,
    pub recoveries_ms: Vec<u64>,
}

#[derive(Default)]
pub struct LiveQoe {
    viewers: HashMap<ParticipantId, Viewer>,
    /// Problem reports filed per participant.
    problems: HashMap<ParticipantId, usize>,
    first_frames: Vec<(Cohort, u64)>,
    recoveries: Vec<(Cohort, u64)>,
}

/// A live's (or one cohort's) KPIs; `None` where nothing was reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub viewers: u64,
    pub startups: u64,
    pub startup_reliability: Option<f64>,
    pub first_frame_p50_ms: Option<u64>,
    pub first_frame_p95_ms: Option<u64>,
    pub freeze_ratio: Option<f64>,
    pub freezes: u64,
    pub freezes_per_viewer_hour: Option<f64>,
    pub recovery_p50_ms: Option<u64>,
    pub recovery_p95_ms: Option<u64>,
    pub watch_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<Kpis>,
}

/// The `ceil(q·n)`-th smallest value (the KPIs' percentile rule; the loadtest uses it too).
pub fn quantile(mut v: Vec<u64>, q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

impl LiveQoe {
    /// Take a viewer's report.
    pub fn report(&mut self, id: ParticipantId, profile: &str, client: Client, r: QoeReport, now: Instant) -> Result<Delta, AppError> {
        r.check()?;
        if !self.viewers.contains_key(&id) && self.viewers.len() >= MAX_VIEWERS {
            return Err(AppError::new(ErrorCode::ServerBusy, "this live's QoE table is full"));
        }
        let v = self.viewers.entry(id).or_insert_with(|| Viewer {
            cohort: (profile.to_owned(), client),
            last: QoeReport::default(),
            startup: None,
            at: now.checked_sub(MIN_REPORT_GAP).unwrap_or(now),
        });
        if now.saturating_duration_since(v.at) < MIN_REPORT_GAP && v.last != QoeReport::default() {
            return Err(AppError::new(ErrorCode::RateLimited, "one QoE report every 2 s at most")
                .retry_after(MIN_REPORT_GAP.saturating_sub(now.saturating_duration_since(v.at)).as_millis() as u64));
        }
        v.at = now;
        // Cumulative counters only grow; one that went back starts a new baseline.
        let grow = |new: u64, old: u64| new.saturating_sub(old);
        let mut d = Delta {
            freezes: grow(r.freezes, v.last.freezes),
            freeze_ms: grow(r.freeze_ms, v.last.freeze_ms),
            watch_ms: grow(r.watch_ms, v.last.watch_ms),
            ..Delta::default()
        };
        if v.startup.is_none() {
            d.startup = match r.first_frame_ms {
                Some(f) if f <= STARTUP_TARGET_MS => Some(Startup::Ok),
                Some(_) => Some(Startup::Slow),
                None if r.watch_ms >= STARTUP_GIVE_UP_MS => Some(Startup::Failed),
                None => None,
            };
            v.startup = d.startup;
        }
        if v.last.first_frame_ms.is_none()
            && let Some(f) = r.first_frame_ms
        {
            d.first_frame_ms = Some(f);
            if self.first_frames.len() < MAX_SAMPLES {
                self.first_frames.push((v.cohort.clone(), f));
            }
        }
        for &ms in &r.recoveries_ms {
            if self.recoveries.len() < MAX_SAMPLES {
                self.recoveries.push((v.cohort.clone(), ms));
            }
        }
        d.recoveries_ms = r.recoveries_ms.clone();
        v.last = QoeReport { recoveries_ms: Vec::new(), first_frame_ms: r.first_frame_ms.or(v.last.first_frame_ms), ..r };
        Ok(d)
    }

    /// Count a problem report of `id`; `false` past `max`.
    pub fn note_problem(&mut self, id: ParticipantId, max: usize) -> bool {
        if self.problems.len() >= MAX_VIEWERS && !self.problems.contains_key(&id) {
            return false;
        }
        let n = self.problems.entry(id).or_default();
        *n += 1;
        *n <= max
    }

    /// A viewer's last report (attached to their problem reports).
    pub fn last(&self, id: ParticipantId) -> Option<&QoeReport> {
        self.viewers.get(&id).map(|v| &v.last)
    }

    fn kpis_of(&self, keep: impl Fn(&Cohort) -> bool) -> Kpis {
        let mut k = Kpis::default();
        let (mut ok, mut watch_ms, mut freeze_ms) = (0u64, 0u64, 0u64);
        for v in self.viewers.values().filter(|v| keep(&v.cohort)) {
            k.viewers += 1;
            if let Some(s) = v.startup {
                k.startups += 1;
                ok += u64::from(s == Startup::Ok);
            }
            k.freezes += v.last.freezes;
            freeze_ms += v.last.freeze_ms;
            watch_ms += v.last.watch_ms;
        }
        k.startup_reliability = (k.startups > 0).then(|| ok as f64 / k.startups as f64);
        let firsts: Vec<u64> = self.first_frames.iter().filter(|(c, _)| keep(c)).map(|(_, f)| *f).collect();
        k.first_frame_p50_ms = quantile(firsts.clone(), 0.5);
        k.first_frame_p95_ms = quantile(firsts, 0.95);
        let recoveries: Vec<u64> = self.recoveries.iter().filter(|(c, _)| keep(c)).map(|(_, r)| *r).collect();
        k.recovery_p50_ms = quantile(recoveries.clone(), 0.5);
        k.recovery_p95_ms = quantile(recoveries, 0.95);
        k.watch_secs = watch_ms as f64 / 1000.0;
        if watch_ms > 0 {
            k.freeze_ratio = Some(freeze_ms as f64 / watch_ms as f64);
            k.freezes_per_viewer_hour = Some(k.freezes as f64 / (watch_ms as f64 / 3_600_000.0));
        }
        k
    }

    /// The live's KPIs, with one entry per (profile, client) cohort.
    pub fn kpis(&self) -> Kpis {
        let mut k = self.kpis_of(|_| true);
        let cohorts: BTreeMap<&Cohort, ()> = self.viewers.values().map(|v| (&v.cohort, ())).collect();
        k.cohorts = cohorts
            .keys()
            .map(|c| {
                let mut ck = self.kpis_of(|x| x == *c);
                ck.profile = Some(c.0.clone());
                ck.client = Some(c.1);
                ck
            })
            .collect();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: Option<u64>, freezes: u64, freeze_ms: u64, watch_ms: u64, rec: &[u64]) -> QoeReport {
        QoeReport { first_frame_ms: first, freezes, freeze_ms, watch_ms, recoveries_ms: rec.to_vec(), ..Default::default() }
    }

    #[test]
    fn kpis_add_up_from_cumulative_reports() {
        let mut q = LiveQoe::default();
        let (a, b, c) = (ParticipantId::next(), ParticipantId::next(), ParticipantId::next());
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let d = q.report(a, "interactive", Client::Browser, r(Some(600), 0, 0, 10_000, &[]), s(10)).unwrap();
        assert_eq!((d.startup, d.first_frame_ms, d.watch_ms), (Some(Startup::Ok), Some(600), 10_000));
        let d = q.report(a, "interactive", Client::Browser, r(Some(600), 2, 3_000, 20_000, &[1_000, 2_000]), s(20)).unwrap();
        assert_eq!((d.startup, d.first_frame_ms, d.freezes, d.freeze_ms, d.watch_ms), (None, None, 2, 3_000, 10_000));
        q.report(b, "interactive", Client::Loadtest, r(Some(2_500), 0, 0, 20_000, &[]), s(20)).unwrap();
        let d = q.report(c, "interactive", Client::Browser, r(None, 0, 0, 10_000, &[]), s(20)).unwrap();
        assert_eq!(d.startup, Some(Startup::Failed));
        let k = q.kpis();
        assert_eq!((k.viewers, k.startups, k.freezes), (3, 3, 2));
        assert_eq!(k.startup_reliability, Some(1.0 / 3.0));
        assert_eq!((k.first_frame_p50_ms, k.first_frame_p95_ms), (Some(600), Some(2_500)));
        assert_eq!(k.freeze_ratio, Some(3_000.0 / 50_000.0));
        assert_eq!(k.freezes_per_viewer_hour, Some(2.0 / (50_000.0 / 3_600_000.0)));
        assert_eq!((k.recovery_p50_ms, k.recovery_p95_ms), (Some(1_000), Some(2_000)));
        assert_eq!(k.cohorts.len(), 2);
        let browser = &k.cohorts[0];
        assert_eq!((browser.client, browser.viewers, browser.startup_reliability), (Some(Client::Browser), 2, Some(0.5)));
    }

    #[test]
    fn reports_are_bounded_and_paced() {
        let mut q = LiveQoe::default();
        let a = ParticipantId::next();
        let t0 = Instant::now();
        q.report(a, "p", Client::Other, r(Some(1), 0, 0, 1_000, &[]), t0).unwrap();
        let e = q.report(a, "p", Client::Other, r(Some(1), 0, 0, 2_000, &[]), t0 + Duration::from_millis(500)).err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::RateLimited));
        for bad in [
            r(None, 0, 0, MAX_WATCH_MS + 1, &[]),
            r(None, 0, 0, 1, &[1; 21]),
            r(None, 0, 0, 1, &[3_600_001]),
            QoeReport { layer: Some("<script>".into()), ..Default::default() },
            QoeReport { freezes: 2_000_000, ..Default::default() },
        ] {
            assert_eq!(q.report(ParticipantId::next(), "p", Client::Other, bad, t0).err().map(|e| e.code), Some(ErrorCode::BadMessage));
        }
        // A counter that goes back starts a new baseline, never a negative delta.
        let d = q.report(a, "p", Client::Other, r(Some(1), 0, 0, 500, &[]), t0 + Duration::from_secs(3)).unwrap();
        assert_eq!(d.watch_ms, 0);
    }
}
