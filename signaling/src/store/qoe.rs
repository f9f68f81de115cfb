//! Player QoE in the store (issue #13): a live's KPI summary when it ends, and viewers'
//! problem reports.

use super::{Store, db};
use crate::error::AppError;
use serde::Serialize;
use sqlx::Row;

/// A viewer's problem report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProblemRow {
    pub id: i64,
    pub live_id: String,
    pub room: String,
    pub identity: String,
    pub tag: String,
    pub text: String,
    /// The reporter's last QoE report and the page's context (JSON values).
    pub qoe: serde_json::Value,
    pub context: serde_json::Value,
    pub at: i64,
}

/// An ended live with its KPIs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PastLive {
    pub room: String,
    pub live_id: String,
    pub profile: Option<String>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    pub kpis: serde_json::Value,
}

fn json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

impl Store {
    /// Keep a live's KPIs (at its end, and on shutdown: a live that goes on after a restart
    /// overwrites them later).
    pub async fn save_kpis(&self, live: &str, profile: &str, kpis: &serde_json::Value) -> Result<(), AppError> {
        sqlx::query("UPDATE lives SET profile = $1, kpis = $2 WHERE id = $3")
            .bind(profile)
            .bind(kpis.to_string())
            .bind(live)
            .execute(&self.pool)
            .await
            .map_err(db("could not store the live's KPIs"))?;
        Ok(())
    }

    /// The last `n` lives that ended, newest first.
    pub async fn past_lives(&self, n: usize) -> Result<Vec<PastLive>, AppError> {
        let rows = sqlx::query(
            "SELECT id, room, profile, created_at, ended_at, kpis FROM lives WHERE ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT $1",
        )
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("could not read past lives"))?;
        Ok(rows
            .iter()
            .map(|r| PastLive {
                room: r.get("room"),
                live_id: r.get("id"),
                profile: r.get("profile"),
                created_at: r.get("created_at"),
                ended_at: r.get("ended_at"),
                kpis: json(r.get("kpis")),
            })
            .collect())
    }

    pub async fn add_problem(&self, p: &ProblemRow) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO problem_reports (id, live_id, room, identity, tag, body, qoe, context, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(p.id)
        .bind(&p.live_id)
        .bind(&p.room)
        .bind(&p.identity)
        .bind(&p.tag)
        .bind(&p.text)
        .bind(p.qoe.to_string())
        .bind(p.context.to_string())
        .bind(p.at)
        .execute(&self.pool)
        .await
        .map_err(db("could not store the report"))?;
        Ok(())
    }

    /// The newest `n` problem reports, and how many there are per tag.
    pub async fn problems(&self, n: usize) -> Result<(Vec<ProblemRow>, Vec<(String, i64)>), AppError> {
        let e = "could not read problem reports";
        let rows = sqlx::query(
            "SELECT id, live_id, room, identity, tag, body, qoe, context, created_at FROM problem_reports ORDER BY id DESC LIMIT $1",
        )
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db(e))?;
        let recent = rows
            .iter()
            .map(|r| ProblemRow {
                id: r.get("id"),
                live_id: r.get("live_id"),
                room: r.get("room"),
                identity: r.get("identity"),
                tag: r.get("tag"),
                text: r.get("body"),
                qoe: json(r.get("qoe")),
                context: json(r.get("context")),
                at: r.get("created_at"),
            })
            .collect();
        let counts = sqlx::query("SELECT tag, COUNT(*) AS n FROM problem_reports GROUP BY tag")
            .fetch_all(&self.pool)
            .await
            .map_err(db(e))?
            .iter()
            .map(|r| (r.get::<String, _>("tag"), r.get::<i64, _>("n")))
            .collect();
        Ok((recent, counts))
    }
}
