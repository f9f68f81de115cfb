//! The delivery task: POST every due message, signed at each attempt (so a retry hours later
//! still passes the receiver's timestamp check), record how it went, and schedule the next
//! attempt by `webhooks.retry_delays_secs`. Due messages are read from the store, so retries
//! survive a restart. A 2xx answer delivers; `410 Gone` gives up at once (Standard Webhooks:
//! the endpoint is gone); anything else, or no answer within `timeout_secs`, is retried.

use super::sign;
use crate::config::WebhooksConfig;
use crate::store::{Delivery, Store, unix_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Messages attempted at once.
const BATCH: usize = 16;
/// Longest sleep between looks at the store (a wake-up comes sooner for new messages).
const IDLE: Duration = Duration::from_secs(30);

/// How one attempt went.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

pub fn spawn(config: WebhooksConfig, store: Arc<Store>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let client = match client(&config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("webhooks are off: the HTTP client could not start: {e}");
                return;
            }
        };
        // validate() refused a secret without a key: this is never empty here.
        let key = sign::key(&config.secret).unwrap_or_default();
        let mut pruned = tokio::time::Instant::now() - Duration::from_secs(3600);
        loop {
            round(&config, &store, &client, &key).await;
            if pruned.elapsed() >= Duration::from_secs(3600) {
                pruned = tokio::time::Instant::now();
                let before = unix_ms() - config.log_days as i64 * 86_400_000;
                match store.prune_deliveries(before).await {
                    Ok(n) if n > 0 => tracing::info!(deliveries = n, "webhook log: old deliveries removed"),
                    Ok(_) => {}
                    Err(e) => tracing::error!("webhook log: {e}"),
                }
            }
            let sleep = match store.next_delivery_at().await {
                Ok(Some(at)) => Duration::from_millis((at - unix_ms()).clamp(0, IDLE.as_millis() as i64) as u64),
                Ok(None) => IDLE,
                Err(e) => {
                    tracing::error!("webhooks: {e}");
                    IDLE
                }
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => break,
            }
        }
    });
}

/// Attempt everything due now, a batch at a time.
async fn round(config: &WebhooksConfig, store: &Store, client: &reqwest::Client, key: &[u8]) {
    // Bounded: each pass either finishes its batch (every row leaves the due set: delivered,
    // failed or due later) or stops; 1000 batches is more than any backlog a tick should take.
    for _ in 0..1000 {
        let due = match store.due_deliveries(unix_ms(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("webhooks: {e}");
                return;
            }
        };
        let outcomes = futures_util::future::join_all(due.iter().map(|d| attempt(client, key, d))).await;
        for (d, outcome) in due.iter().zip(outcomes) {
            finish(config, store, d, outcome).await;
        }
        if due.len() < BATCH {
            return;
        }
    }
}

async fn finish(config: &WebhooksConfig, store: &Store, d: &Delivery, outcome: Outcome) {
    let attempts = d.attempts + 1;
    let now = unix_ms();
    let (state, next_at) = if outcome.delivered() {
        ("delivered", None)
    } else if outcome.status == Some(410) {
        ("failed", None)
    } else {
        match config.retry_delays_secs.get(attempts as usize - 1) {
            Some(delay) => ("pending", Some(now + (delay * 1000.0) as i64)),
            None => ("failed", None),
        }
    };
    let result = if state == "pending" { "retry" } else { state };
    metrics::counter!("onair_webhook_deliveries_total", "result" => result).increment(1);
    match state {
        "delivered" => tracing::debug!(id = %d.id, event = %d.event, attempts, "webhook delivered"),
        "failed" => {
            tracing::warn!(id = %d.id, event = %d.event, attempts, status = ?outcome.status, error = ?outcome.error, "webhook given up")
        }
        _ => {
            tracing::info!(id = %d.id, event = %d.event, attempts, status = ?outcome.status, error = ?outcome.error, "webhook will be retried")
        }
    }
    if let Err(e) = store.finish_attempt(&d.id, state, attempts, next_at, outcome.status, outcome.error.as_deref(), now).await {
        tracing::error!(id = %d.id, "webhook log: {e}");
    }
}

fn client(config: &WebhooksConfig) -> Result<reqwest::Client, String> {
    super::tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_secs))
        .connect_timeout(Duration::from_secs(config.timeout_secs.min(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Onair-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// One POST of one message.
pub async fn attempt(client: &reqwest::Client, key: &[u8], d: &Delivery) -> Outcome {
    let timestamp = unix_ms() / 1000;
    let signature = sign::sign(key, &d.id, timestamp, d.payload.as_bytes());
    let sent = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            let error = (!res.status().is_success()).then(|| format!("HTTP {status}"));
            Outcome { status: Some(status), error }
        }
        Err(e) => {
            let mut text = format!("{e}");
            let mut source = std::error::Error::source(&e);
            // The cause chain says what failed (refused, timed out, certificate), within bounds.
            for _ in 0..4 {
                let Some(s) = source else { break };
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Outcome { status: None, error: Some(text.chars().take(300).collect()) }
        }
    }
}
