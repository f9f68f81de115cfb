//! The webhook delivery log (issue #14): every message with its payload, state and attempts.

use super::{Store, db};
use crate::error::AppError;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// One message and how its delivery went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// `msg_…`: the `webhook-id` header; the same on every attempt.
    pub id: String,
    pub event: String,
    pub url: String,
    /// The body, exactly as signed.
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, event, url, payload, state, attempts, next_at, last_status, last_error, created_at, finished_at";

fn delivery(r: &AnyRow) -> Delivery {
    let state: String = r.get("state");
    Delivery {
        id: r.get("id"),
        event: r.get("event"),
        url: r.get("url"),
        payload: r.get("payload"),
        next_at: (state == "pending").then(|| r.get("next_at")),
        state,
        attempts: r.get("attempts"),
        last_status: r.get("last_status"),
        last_error: r.get("last_error"),
        created_at: r.get("created_at"),
        finished_at: r.get("finished_at"),
    }
}

impl Store {
    /// Keep a new message, due now.
    pub async fn add_delivery(&self, id: &str, event: &str, url: &str, payload: &str, at: i64) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, event, url, payload, state, attempts, next_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
        )
        .bind(id)
        .bind(event)
        .bind(url)
        .bind(payload)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db("could not keep the webhook message"))?;
        Ok(())
    }

    /// Pending messages due at `now`, oldest first.
    pub async fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<Delivery>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2");
        let rows =
            sqlx::query(&q).bind(now).bind(limit as i64).fetch_all(&self.pool).await.map_err(db("could not read the webhook log"))?;
        Ok(rows.iter().map(delivery).collect())
    }

    /// When the next pending message is due.
    pub async fn next_delivery_at(&self) -> Result<Option<i64>, AppError> {
        sqlx::query_scalar("SELECT MIN(next_at) FROM webhook_deliveries WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(db("could not read the webhook log"))
    }

    /// Record an attempt: `pending` again (with `next_at`), `delivered` or `failed`.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_attempt(
        &self,
        id: &str,
        state: &str,
        attempts: i64,
        next_at: Option<i64>,
        status: Option<u16>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), AppError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_at = $3, last_status = $4, last_error = $5, finished_at = $6 WHERE id = $7",
        )
        .bind(state)
        .bind(attempts)
        .bind(next_at.unwrap_or(0))
        .bind(status.map(i64::from))
        .bind(error)
        .bind((state != "pending").then_some(now))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("could not record the webhook attempt"))?;
        Ok(())
    }

    /// The log, newest first: optionally one state and/or one event, ids below `before`.
    pub async fn deliveries(
        &self,
        state: Option<&str>,
        event: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, AppError> {
        let q = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR event = $2) AND ($3 IS NULL OR id < $3) ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(&q)
            .bind(state)
            .bind(event)
            .bind(before)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db("could not read the webhook log"))?;
        Ok(rows.iter().map(delivery).collect())
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await.map_err(db("could not read the webhook log"))?;
        Ok(row.as_ref().map(delivery))
    }

    /// Send a failed message again from now, with a fresh count of attempts.
    pub async fn redeliver(&self, id: &str, now: i64) -> Result<bool, AppError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_at = $1, finished_at = NULL WHERE id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("could not update the webhook log"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Forget finished messages older than `before`.
    pub async fn prune_deliveries(&self, before: i64) -> Result<u64, AppError> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db("could not prune the webhook log"))?;
        Ok(done.rows_affected())
    }
}
