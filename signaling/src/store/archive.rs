//! Archive entries and their raw files (issue #14).

use super::{Store, db};
use crate::error::AppError;
use sqlx::Row;
use sqlx::any::AnyRow;

/// One live's archive entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRow {
    pub id: String,
    pub room: String,
    pub live_id: String,
    /// `recording`, `processing`, `ready`, `raw_only` or `failed`.
    pub state: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub video_name: Option<String>,
    pub video_bytes: Option<i64>,
    pub error: Option<String>,
    pub expires_at: i64,
}

/// A publisher's recorded file (and stretch on stage).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveFile {
    pub name: String,
    pub identity: String,
    pub display_name: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub bytes: i64,
    pub video_frames: i64,
    pub audio_frames: i64,
    pub video_codec: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, room, live_id, state, started_at, ended_at, video_name, video_bytes, error, expires_at";

fn archive(r: &AnyRow) -> ArchiveRow {
    ArchiveRow {
        id: r.get("id"),
        room: r.get("room"),
        live_id: r.get("live_id"),
        state: r.get("state"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        video_name: r.get("video_name"),
        video_bytes: r.get("video_bytes"),
        error: r.get("error"),
        expires_at: r.get("expires_at"),
    }
}

fn file(r: &AnyRow) -> ArchiveFile {
    ArchiveFile {
        name: r.get("name"),
        identity: r.get("identity"),
        display_name: r.get("display_name"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        bytes: r.get("bytes"),
        video_frames: r.get("video_frames"),
        audio_frames: r.get("audio_frames"),
        video_codec: r.get("video_codec"),
        width: r.get("width"),
        height: r.get("height"),
        error: r.get("error"),
    }
}

impl Store {
    pub async fn add_archive(&self, a: &ArchiveRow, now: i64) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO archives (id, room, live_id, state, started_at, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.id)
        .bind(&a.room)
        .bind(&a.live_id)
        .bind(&a.state)
        .bind(a.started_at)
        .bind(a.expires_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db("could not keep the archive entry"))?;
        Ok(())
    }

    pub async fn archive(&self, id: &str) -> Result<Option<ArchiveRow>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM archives WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await.map_err(db("could not read the archive"))?;
        Ok(row.as_ref().map(archive))
    }

    /// Entries, newest first: one room's, or every room's (`None`).
    pub async fn archives(&self, room: Option<&str>, limit: i64) -> Result<Vec<ArchiveRow>, AppError> {
        let e = "could not read the archive";
        let rows = match room {
            Some(room) => {
                let q = format!("SELECT {COLUMNS} FROM archives WHERE room = $1 ORDER BY started_at DESC, id DESC LIMIT $2");
                sqlx::query(&q).bind(room).bind(limit).fetch_all(&self.pool).await.map_err(db(e))?
            }
            None => {
                let q = format!("SELECT {COLUMNS} FROM archives ORDER BY started_at DESC, id DESC LIMIT $1");
                sqlx::query(&q).bind(limit).fetch_all(&self.pool).await.map_err(db(e))?
            }
        };
        Ok(rows.iter().map(archive).collect())
    }

    /// Entries left `recording` or `processing` by a server that stopped.
    pub async fn unfinished_archives(&self) -> Result<Vec<ArchiveRow>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM archives WHERE state IN ('recording', 'processing') ORDER BY started_at");
        let rows = sqlx::query(&q).fetch_all(&self.pool).await.map_err(db("could not read the archive"))?;
        Ok(rows.iter().map(archive).collect())
    }

    pub async fn expired_archives(&self, now: i64) -> Result<Vec<ArchiveRow>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM archives WHERE expires_at <= $1 AND state NOT IN ('recording', 'processing')");
        let rows = sqlx::query(&q).bind(now).fetch_all(&self.pool).await.map_err(db("could not read the archive"))?;
        Ok(rows.iter().map(archive).collect())
    }

    /// Move an entry on: its state, the end of the live, the video and why it is missing.
    pub async fn set_archive_state(
        &self,
        id: &str,
        state: &str,
        ended_at: Option<i64>,
        video: Option<(&str, i64)>,
        error: Option<&str>,
    ) -> Result<(), AppError> {
        sqlx::query(
            "UPDATE archives SET state = $1, ended_at = COALESCE($2, ended_at), video_name = $3, video_bytes = $4, error = $5 WHERE id = $6",
        )
        .bind(state)
        .bind(ended_at)
        .bind(video.map(|v| v.0))
        .bind(video.map(|v| v.1))
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("could not update the archive entry"))?;
        Ok(())
    }

    pub async fn add_archive_file(&self, archive_id: &str, f: &ArchiveFile) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO archive_files (archive_id, name, identity, display_name, started_at, ended_at, bytes, video_frames, audio_frames, video_codec, width, height, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (archive_id, name) DO UPDATE SET ended_at = excluded.ended_at, bytes = excluded.bytes, video_frames = excluded.video_frames, audio_frames = excluded.audio_frames, error = excluded.error",
        )
        .bind(archive_id)
        .bind(&f.name)
        .bind(&f.identity)
        .bind(&f.display_name)
        .bind(f.started_at)
        .bind(f.ended_at)
        .bind(f.bytes)
        .bind(f.video_frames)
        .bind(f.audio_frames)
        .bind(&f.video_codec)
        .bind(f.width)
        .bind(f.height)
        .bind(&f.error)
        .execute(&self.pool)
        .await
        .map_err(db("could not keep the recorded file"))?;
        Ok(())
    }

    /// An entry's raw files, in the order they started.
    pub async fn archive_files(&self, archive_id: &str) -> Result<Vec<ArchiveFile>, AppError> {
        let rows = sqlx::query(
            "SELECT name, identity, display_name, started_at, ended_at, bytes, video_frames, audio_frames, video_codec, width, height, error FROM archive_files WHERE archive_id = $1 ORDER BY started_at, name",
        )
        .bind(archive_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("could not read the recorded files"))?;
        Ok(rows.iter().map(file).collect())
    }

    /// Forget an entry and its files' rows (the files themselves are the caller's).
    pub async fn delete_archive(&self, id: &str) -> Result<bool, AppError> {
        let e = "could not delete the archive entry";
        sqlx::query("DELETE FROM archive_files WHERE archive_id = $1").bind(id).execute(&self.pool).await.map_err(db(e))?;
        let done = sqlx::query("DELETE FROM archives WHERE id = $1").bind(id).execute(&self.pool).await.map_err(db(e))?;
        Ok(done.rows_affected() == 1)
    }
}
