//! The one boundary to persistence. Features call [`Store`] and get domain types back or an
//! [`AppError`]; what lies behind it is nobody else's business: SQLite — a file under the data
//! directory by default, created with its tables on first start — or PostgreSQL for many nodes,
//! both through `sqlx`'s `Any` driver with the same versioned migrations
//! (`signaling/migrations/`). The SQL is portable: server-made ids, BIGINT unix-millisecond
//! times, `ON CONFLICT` upserts, `$n` parameters, booleans read as `CAST(… AS INTEGER)` (SQLite
//! has no boolean type the `Any` driver maps).
//!
//! Every method is async and awaits the database: never call one while holding a room or feed
//! lock (docs/architecture.md §6.1).

mod archive;
mod chat;
mod commerce;
mod keys;
mod legacy_keys;
mod qoe;
mod schedule;
mod webhooks;

pub use archive::{ArchiveFile, ArchiveRow};
pub use chat::{AuditEntry, CommentRow, Flag, LiveState, MemberFlags, ReportRow, Visibility};
pub use commerce::{LiveRow, PaymentRow, ProductRow, Recorded, Refunded};
pub use keys::{KeySeat, KeyView, MintedKey, REVOKED_KEY, UNKNOWN_KEY};
pub use qoe::{PastLive, ProblemRow};
pub use schedule::{DueReminder, ScheduleRow, UPCOMING};
pub use webhooks::Delivery;

use crate::config::Config;
use crate::error::AppError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a `store.url` names, if any.
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Everything the server keeps across restarts.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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

/// The URL without a password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Open the store the configuration names (`store.url`: `sqlite:<path>`, `sqlite::memory:`
    /// or `postgres://…`), create its tables when missing (the same migrations for both), and
    /// import a stream-keys file of an older version (`rtmp.keys_file`).
    pub async fn open(config: &Config) -> Result<Self, AppError> {
        install_default_drivers();
        let url = config.store.url.trim();
        let backend = Backend::of(url).ok_or_else(|| {
            AppError::internal("the store's url is not valid", format!("store.url {:?}: sqlite: or postgres:// expected", redacted(url)))
        })?;
        let pool = match backend {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let memory = path == ":memory:" || path.is_empty();
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                if !memory && let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| AppError::internal("could not create the data directory", format!("{}: {e}", dir.display())))?;
                }
                // Created when missing; every connection in WAL mode with foreign keys on.
                let url = if memory || query.contains("mode=") {
                    url.to_owned()
                } else {
                    format!("sqlite:{path}?mode=rwc{}{query}", if query.is_empty() { "" } else { "&" })
                };
                let opts = if memory {
                    // An in-memory database lives as long as its one connection: keep exactly one.
                    AnyPoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
                } else {
                    AnyPoolOptions::new().max_connections(4)
                };
                opts.after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(db("could not open the store"))?
            }
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| AppError::internal("could not open the store", format!("{}: {e}", redacted(url))))?,
        };
        MIGRATOR.run(&pool).await.map_err(|e| AppError::internal("could not prepare the store", format!("migrations: {e}")))?;
        let store = Self { pool, backend, last_id: AtomicI64::new(0) };
        if !config.rtmp.keys_file.is_empty() {
            legacy_keys::import(&store, Path::new(&config.rtmp.keys_file)).await?;
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
