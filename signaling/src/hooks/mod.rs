//! Outgoing webhooks (docs/api.md "Webhooks"): the platform hears about lives as they are
//! scheduled, remind, start and end, and (when asked) about every participant. Each event is
//! one message, signed as Standard Webhooks do ([`sign`]), kept in the store before its first
//! attempt and retried with the configured backoff ([`deliver`]), so a receiver that is down, or
//! a restart of Onair, loses nothing; a receiver may get a message twice and tells by its
//! `webhook-id`.
//!
//! [`Hooks::emit`] never waits: rooms call it under their lock. It queues the event for the
//! intake task, which writes it to the store and wakes the delivery task.

pub mod deliver;
pub mod sign;

use crate::config::{WEBHOOK_EVENTS, WebhooksConfig};
use crate::store::Store;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

/// Events waiting for the intake task; past this, events are dropped (counted, logged).
const QUEUE: usize = 8192;

/// One event on its way to the store.
#[derive(Debug)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
    /// Unix milliseconds when it happened.
    pub at: i64,
}

struct Inner {
    tx: mpsc::Sender<Event>,
    wake: Arc<Notify>,
    events: Vec<String>,
    intake: Mutex<Option<JoinHandle<()>>>,
}

/// The handle features emit events with; cheap to clone. Off when no URL is configured.
#[derive(Clone, Default)]
pub struct Hooks {
    inner: Option<Arc<Inner>>,
}

impl Hooks {
    /// No webhooks: every emit is a no-op.
    pub fn off() -> Self {
        Self::default()
    }

    /// Start the intake and delivery tasks when `config.url` is set. They stop when `stop`
    /// changes; [`Hooks::flush`] waits for the intake to have stored what was emitted.
    pub fn start(config: &WebhooksConfig, store: Arc<Store>, stop: watch::Receiver<bool>) -> Self {
        if config.url.is_empty() {
            return Self::off();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let intake = tokio::spawn(intake(rx, store.clone(), config.url.clone(), wake.clone(), stop.clone()));
        deliver::spawn(config.clone(), store, wake.clone(), stop);
        Self { inner: Some(Arc::new(Inner { tx, wake, events: config.events.clone(), intake: Mutex::new(Some(intake)) })) }
    }

    /// Look at the store for due messages now (a delivery was put back to pending).
    pub fn wake(&self) {
        if let Some(i) = &self.inner {
            i.wake.notify_one();
        }
    }

    /// Whether `kind` is sent (participant events are off unless configured).
    pub fn wants(&self, kind: &str) -> bool {
        self.inner.as_ref().is_some_and(|i| i.events.iter().any(|e| e == kind))
    }

    /// Queue an event (never waits; dropped, loudly, when the queue is full).
    pub fn emit(&self, kind: &'static str, data: Value) {
        let Some(inner) = &self.inner else { return };
        if !inner.events.iter().any(|e| e == kind) {
            return;
        }
        if inner.tx.try_send(Event { kind, data, at: crate::store::unix_ms() }).is_err() {
            metrics::counter!("onair_webhook_events_dropped_total").increment(1);
            tracing::error!(event = kind, "webhook event dropped: the intake queue is full or closed");
        }
    }

    /// Wait until the intake task has stored every event emitted so far and stopped (after the
    /// server's stop signal).
    pub async fn flush(&self) {
        let handle = self.inner.as_ref().and_then(|i| i.intake.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(h) = handle {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), h).await;
        }
    }
}

/// The process's TLS provider for reqwest: rustls on ring (the crypto rtc already builds). Both
/// reqwest users need it — the webhooks and the OTLP exporter, whose reqwest is the same crate
/// with the features unified —, so it is installed before either builds a client. Idempotent.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The message a receiver gets: `{"type", "timestamp", "data"}` (Standard Webhooks' shape).
pub fn payload(kind: &str, at_ms: i64, data: &Value) -> String {
    serde_json::json!({ "type": kind, "timestamp": rfc3339(at_ms), "data": data }).to_string()
}

async fn intake(mut rx: mpsc::Receiver<Event>, store: Arc<Store>, url: String, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = stop.changed() => None,
        };
        let Some(ev) = ev else { break };
        keep(&store, &url, ev).await;
        wake.notify_one();
    }
    // Stopping: what was emitted before the stop is kept for the next start to deliver.
    rx.close();
    while let Ok(ev) = rx.try_recv() {
        keep(&store, &url, ev).await;
    }
}

async fn keep(store: &Store, url: &str, ev: Event) {
    let id = format!("msg_{}", store.next_id());
    let body = payload(ev.kind, ev.at, &ev.data);
    if let Err(e) = store.add_delivery(&id, ev.kind, url, &body, ev.at).await {
        metrics::counter!("onair_webhook_events_dropped_total").increment(1);
        tracing::error!(event = ev.kind, "webhook event lost: {e}");
    }
}

/// `config` is usable: a web URL, a secret that decodes, known events, sane retries.
pub fn validate(c: &WebhooksConfig) -> anyhow::Result<()> {
    if let Some(e) = c.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
        anyhow::bail!("webhooks.events: no event {e:?} (events: {WEBHOOK_EVENTS:?})");
    }
    if c.retry_delays_secs.len() > 20 || c.retry_delays_secs.iter().any(|d| !(0.0..=86_400.0).contains(d)) {
        anyhow::bail!("webhooks.retry_delays_secs: at most 20 delays, each 0..=86400 seconds");
    }
    if !(1..=60).contains(&c.timeout_secs) || !(1..=3650).contains(&c.log_days) {
        anyhow::bail!("webhooks: timeout_secs 1..=60, log_days 1..=3650");
    }
    if c.url.is_empty() {
        return Ok(());
    }
    let url = url::Url::parse(&c.url).map_err(|e| anyhow::anyhow!("webhooks.url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("webhooks.url must be an http:// or https:// URL");
    }
    match sign::key(&c.secret) {
        Some(k) if k.len() >= 16 && (c.secret.starts_with("whsec_") || c.secret.len() >= 24) => Ok(()),
        _ => anyhow::bail!("webhooks.secret (or ONAIR_WEBHOOK_SECRET) must be whsec_<base64 of ≥ 16 bytes> or ≥ 24 bytes of text"),
    }
}

/// `2026-11-27T01:30:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_743_000_123), "2026-11-27T01:30:00.123Z");
    }

    #[test]
    fn config_checks() {
        let mut c = WebhooksConfig::default();
        assert!(validate(&c).is_ok(), "off by default");
        c.url = "https://hooks.example/onair".into();
        assert!(validate(&c).is_err(), "a URL needs a secret");
        c.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
        assert!(validate(&c).is_ok());
        c.secret = "short".into();
        assert!(validate(&c).is_err());
        c.secret = "a-plain-secret-of-enough-bytes".into();
        assert!(validate(&c).is_ok());
        c.url = "ftp://hooks.example/".into();
        assert!(validate(&c).is_err());
        c.url = "http://127.0.0.1:9/".into();
        c.events.push("live_exploded".into());
        assert!(validate(&c).is_err());
        c.events.pop();
        c.retry_delays_secs = vec![-1.0];
        assert!(validate(&c).is_err());
    }
}
