//! The one boundary to persistence. Features call [`Store`] and get domain types back or an
//! [`AppError`]; what lies behind it is nobody else's business. Today that is SQLite through
//! `sqlx` — a file under the data directory by default, created with its tables on first start
//! (versioned migrations in `signaling/migrations/`). The SQL is kept portable (server-made ids,
//! BIGINT unix-millisecond times, `ON CONFLICT` upserts) so PostgreSQL can join behind the same
//! methods for many nodes.
//!
//! Every method is async and awaits the database: never call one while holding a room or feed
//! lock (docs/architecture.md §6.1).

mod chat;
mod commerce;
mod keys;
mod legacy_keys;
mod qoe;
mod schedule;
mod webhooks;

pub use chat::{AuditEntry, CommentRow, Flag, LiveState, MemberFlags, ReportRow, Visibility};
pub use commerce::{LiveRow, PaymentRow, ProductRow, Recorded, Refunded};
pub use keys::{KeySeat, KeyView, MintedKey, REVOKED_KEY, UNKNOWN_KEY};
pub use qoe::{PastLive, ProblemRow};
pub use schedule::{DueReminder, ScheduleRow, UPCOMING};
pub use webhooks::Delivery;

use crate::config::Config;
use crate::error::AppError;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the server keeps across restarts.
pub struct Store {
    pool: SqlitePool,
    /// The last id handed out by [`Store::next_id`].
    last_id: AtomicI64,
}

/// A database failure: the client hears `message`, the log gets the driver's words.
fn db(message: &str) -> impl FnOnce(sqlx::Error) -> AppError + '_ {
    move |e| AppError::internal(message, e)
}

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Open the store the configuration names (`store.url`), create it and its tables when
    /// missing, and import a stream-keys file of an older version (`rtmp.keys_file`).
    pub async fn open(config: &Config) -> Result<Self, AppError> {
        let url = config.store.url.trim();
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| AppError::internal("the store's url is not valid", format!("store.url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let memory = opts.get_filename() == Path::new(":memory:");
        if !memory && let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| AppError::internal("could not create the data directory", format!("{}: {e}", dir.display())))?;
        }
        // An in-memory database lives as long as its one connection: keep exactly one, forever.
        let pool = if memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let pool = pool.connect_with(opts).await.map_err(db("could not open the store"))?;
        MIGRATOR.run(&pool).await.map_err(|e| AppError::internal("could not prepare the store", format!("migrations: {e}")))?;
        let store = Self { pool, last_id: AtomicI64::new(0) };
        if !config.rtmp.keys_file.is_empty() {
            legacy_keys::import(&store, Path::new(&config.rtmp.keys_file)).await?;
        }
        Ok(store)
    }

    /// A new id for a comment, report or audit entry: unix milliseconds × 1024 plus a counter,
    /// increasing within this process, ordered by time, and below 2^53 so JavaScript reads it
    /// exactly (until the year 2248).
    pub fn next_id(&self) -> i64 {
        let floor = unix_ms() * 1024;
        let mut last = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last + 1);
            match self.last_id.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Close the connections (pending writes are already done: every method awaits its write).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
