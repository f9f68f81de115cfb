//! Recording and the archive (issue #14, docs/api.md "Archive").
//!
//! While a live is on, every publisher on its stage is recorded by the SFU's recorder
//! (`sfu::record`: one fragmented MP4 per publisher and stretch on stage, written as packets
//! arrive, nothing decoded) into `archive.dir/<entry id>/`. When the live ends, each file's row
//! goes into the store (which is also the stage's timeline: who was on when), ffmpeg builds the
//! one video of the stage as viewers saw it (`compose.rs`: the grid over time, the voices
//! mixed), and `recording_ready` is sent. Entries expire after `archive.retention_secs`; the
//! sweeper deletes them and their files. Downloads are signed links (`links.rs`).
//!
//! Locks: `Archive.lives` is a leaf, held for map edits and recorder calls that only queue
//! (adding a track, starting a thread), never across an `.await` (docs/architecture.md §6.1).

pub mod compose;
pub mod links;

use crate::app::AppState;
use crate::config::ArchiveConfig;
use crate::store::{ArchiveFile, ArchiveRow, unix_ms};
use serde_json::{Value, json};
use sfu::record::{Recorder, Summary};
use sfu::{ParticipantId, TrackId, TrackInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The recordings of the lives on air on this node.
pub struct Archive {
    config: ArchiveConfig,
    lives: Mutex<HashMap<String, LiveRec>>,
    pub links: links::Links,
}

struct LiveRec {
    id: String,
    dir: PathBuf,
    /// Files started so far (their names count up).
    next: u32,
    publishers: HashMap<ParticipantId, PubRec>,
    /// Recorders being stopped (their rows are written when they are done).
    stopping: Vec<tokio::task::JoinHandle<()>>,
}

struct PubRec {
    recorder: Recorder,
    identity: String,
    name: String,
    /// The file name without `.mp4`.
    stem: String,
}

/// A file name part from an identity: letters, digits, `-` and `_`, at most 40.
fn safe(identity: &str) -> String {
    let s: String = identity.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    if s.is_empty() { "publisher".into() } else { s }
}

impl Archive {
    pub fn new(config: &ArchiveConfig, secret: &str) -> Self {
        Self { config: config.clone(), lives: Mutex::new(HashMap::new()), links: links::Links::new(secret, config.link_secs) }
    }

    fn lives(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveRec>> {
        self.lives.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The folder of an entry's files.
    pub fn entry_dir(&self, id: &str) -> PathBuf {
        Path::new(&self.config.dir).join(id)
    }

    /// A track of a publisher on the stage of `live` started: record it (a new entry for the
    /// live's first track, a new file for the publisher's first).
    pub fn track_published(&self, app: &AppState, room: &str, live: &str, p: ParticipantId, who: (&str, &str), info: &TrackInfo) {
        if !self.config.record || live.is_empty() {
            return;
        }
        let mut lives = self.lives();
        let rec = match lives.get_mut(live) {
            Some(r) => r,
            None => {
                let id = format!("arc_{:016x}", rand::random::<u64>());
                let dir = self.entry_dir(&id);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    tracing::error!(%room, dir = %dir.display(), "not recording this live: {e}");
                    return;
                }
                let now = unix_ms();
                let row = ArchiveRow {
                    id: id.clone(),
                    room: room.to_owned(),
                    live_id: live.to_owned(),
                    state: "recording".into(),
                    started_at: now,
                    ended_at: None,
                    video_name: None,
                    video_bytes: None,
                    error: None,
                    expires_at: now + (self.config.retention_secs as i64).saturating_mul(1000),
                };
                let store = app.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.add_archive(&row, now).await {
                        tracing::error!("archive entry {}: {e}", row.id);
                    }
                });
                tracing::info!(%room, %live, archive = %id, "recording the live");
                lives.entry(live.to_owned()).or_insert(LiveRec { id, dir, next: 1, publishers: HashMap::new(), stopping: Vec::new() })
            }
        };
        if !rec.publishers.contains_key(&p) {
            let stem = format!("{:02}-{}", rec.next, safe(who.0));
            match Recorder::start(&app.sfu, rec.dir.join(&stem)) {
                Ok(recorder) => {
                    rec.next += 1;
                    rec.publishers.insert(p, PubRec { recorder, identity: who.0.to_owned(), name: who.1.to_owned(), stem });
                }
                Err(e) => {
                    tracing::error!(%room, participant = %p, "could not start a recorder: {e}");
                    return;
                }
            }
        }
        if let Some(pr) = rec.publishers.get_mut(&p) {
            pr.recorder.add_track(info);
        }
    }

    /// A track is gone: the recorder stops taking it, and stops when it has none left.
    pub fn track_unpublished(&self, app: &AppState, p: ParticipantId, track: TrackId) {
        let mut lives = self.lives();
        for rec in lives.values_mut() {
            let Some(pr) = rec.publishers.get_mut(&p) else { continue };
            pr.recorder.remove_track(track);
            if pr.recorder.tracks().is_empty()
                && let Some(pr) = rec.publishers.remove(&p)
            {
                let task = stop(app, rec.id.clone(), pr);
                rec.stopping.push(task);
            }
        }
    }

    /// A publisher left (its tracks go with it).
    pub fn publisher_left(&self, app: &AppState, p: ParticipantId) {
        let mut lives = self.lives();
        for rec in lives.values_mut() {
            if let Some(pr) = rec.publishers.remove(&p) {
                let task = stop(app, rec.id.clone(), pr);
                rec.stopping.push(task);
            }
        }
    }

    /// The live ended: stop its recorders, keep their files, build the video, tell the
    /// platform (`recording_ready`).
    pub async fn live_ended(&self, app: &AppState, live: &str) {
        let Some(rec) = self.lives().remove(live) else { return };
        let mut tasks = rec.stopping;
        for (_, pr) in rec.publishers {
            tasks.push(stop(app, rec.id.clone(), pr));
        }
        for t in tasks {
            let _ = t.await;
        }
        finish(app, &rec.id, Some(unix_ms())).await;
    }

    /// Stop every recorder now (the server is stopping): files are closed whole.
    pub async fn stop_all(&self, app: &AppState) {
        let lives: Vec<LiveRec> = self.lives().drain().map(|(_, r)| r).collect();
        for rec in lives {
            let mut tasks = rec.stopping;
            for (_, pr) in rec.publishers {
                tasks.push(stop(app, rec.id.clone(), pr));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Entries a stopped server left `recording` or `processing`: their files (cut where the
    /// server stopped, still playable) are listed from the folder and the video is built.
    pub async fn recover(&self, app: &AppState) {
        let rows = match app.store.unfinished_archives().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("archive recovery: {e}");
                return;
            }
        };
        for row in rows {
            if self.lives().values().any(|l| l.id == row.id) {
                continue;
            }
            let known: Vec<String> =
                app.store.archive_files(&row.id).await.map(|f| f.into_iter().map(|f| f.name).collect()).unwrap_or_default();
            let dir = self.entry_dir(&row.id);
            let mut names: Vec<(String, u64, i64)> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            let meta = e.metadata().ok()?;
                            let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
                            (name.ends_with(".mp4") && name != compose::VIDEO_NAME && !known.contains(&name)).then_some((
                                name,
                                meta.len(),
                                modified,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for (name, bytes, modified) in names {
                let identity = name.split_once('-').map(|(_, r)| r.trim_end_matches(".mp4")).unwrap_or("publisher").to_owned();
                let f = ArchiveFile {
                    name,
                    display_name: identity.clone(),
                    identity,
                    started_at: Some(row.started_at),
                    ended_at: Some(modified),
                    bytes: bytes as i64,
                    video_frames: 0,
                    audio_frames: 0,
                    video_codec: None,
                    width: None,
                    height: None,
                    error: Some("the server stopped during the recording; the file ends there".into()),
                };
                if let Err(e) = app.store.add_archive_file(&row.id, &f).await {
                    tracing::error!("archive recovery: {e}");
                }
            }
            tracing::warn!(archive = %row.id, "an entry the last run left unfinished is finished now");
            finish(app, &row.id, None).await;
        }
    }

    /// Delete entries past their retention, with their files.
    pub async fn sweep(&self, app: &AppState) -> usize {
        let rows = match app.store.expired_archives(unix_ms()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("archive sweep: {e}");
                return 0;
            }
        };
        let mut n = 0;
        for row in rows {
            match self.delete(app, &row.id).await {
                Ok(()) => n += 1,
                Err(e) => tracing::error!(archive = %row.id, "archive sweep: {e}"),
            }
        }
        if n > 0 {
            tracing::info!(entries = n, "archive: expired entries deleted");
        }
        n
    }

    /// Delete an entry: its files, then its rows.
    pub async fn delete(&self, app: &AppState, id: &str) -> Result<(), crate::error::AppError> {
        let dir = self.entry_dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(crate::error::AppError::internal("could not delete the recorded files", format!("{}: {e}", dir.display())));
            }
        }
        app.store.delete_archive(id).await?;
        Ok(())
    }

    /// The JSON of an entry, with signed links to its files.
    pub fn view(&self, row: &ArchiveRow, files: &[ArchiveFile]) -> Value {
        let url = |name: &str| self.links.url(&row.id, name);
        let duration = row.ended_at.map(|e| e - row.started_at).unwrap_or_else(|| unix_ms() - row.started_at).max(0);
        json!({
            "id": row.id,
            "room": row.room,
            "live_id": row.live_id,
            "state": row.state,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
            "duration_ms": duration,
            "expires_at": row.expires_at,
            "error": row.error,
            "video": row.video_name.as_ref().map(|n| json!({ "name": n, "bytes": row.video_bytes, "url": url(n) })),
            "raw": files.iter().map(|f| json!({
                "name": f.name,
                "identity": f.identity,
                "name_shown": f.display_name,
                "started_at": f.started_at,
                "ended_at": f.ended_at,
                "bytes": f.bytes,
                "video_frames": f.video_frames,
                "audio_frames": f.audio_frames,
                "video_codec": f.video_codec,
                "width": f.width,
                "height": f.height,
                "error": f.error,
                "url": url(&f.name),
            })).collect::<Vec<_>>(),
            "timeline": files.iter().map(|f| json!({
                "identity": f.identity, "name_shown": f.display_name, "from_ms": f.started_at, "to_ms": f.ended_at,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Stop a publisher's recorder off the runtime and keep its files' rows.
fn stop(app: &AppState, archive_id: String, pr: PubRec) -> tokio::task::JoinHandle<()> {
    let store = app.store.clone();
    tokio::spawn(async move {
        let PubRec { recorder, identity, name, stem } = pr;
        let summary: Summary = match tokio::task::spawn_blocking(move || recorder.stop()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(archive = %archive_id, "a recorder did not stop cleanly: {e}");
                return;
            }
        };
        if summary.dropped_packets > 0 {
            tracing::warn!(archive = %archive_id, %identity, dropped = summary.dropped_packets, "the recorder fell behind");
        }
        for part in summary.parts {
            let file_name = part.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("{stem}.mp4"));
            let f = ArchiveFile {
                name: file_name,
                identity: identity.clone(),
                display_name: name.clone(),
                started_at: part.started_ms,
                ended_at: part.ended_ms,
                bytes: part.bytes as i64,
                video_frames: part.video_frames as i64,
                audio_frames: part.audio_frames as i64,
                video_codec: part.video_codec.map(str::to_owned),
                width: part.width.map(i64::from),
                height: part.height.map(i64::from),
                error: part.error,
            };
            tracing::info!(archive = %archive_id, file = %f.name, video = f.video_frames, audio = f.audio_frames, bytes = f.bytes, "recorded");
            if let Err(e) = store.add_archive_file(&archive_id, &f).await {
                tracing::error!(archive = %archive_id, "{e}");
            }
        }
    })
}

/// After the live: build the video from the raw files and settle the entry's state.
async fn finish(app: &AppState, id: &str, ended_at: Option<i64>) {
    let files = app.store.archive_files(id).await.unwrap_or_default();
    let _ = app.store.set_archive_state(id, "processing", ended_at, None, None).await;
    let usable: Vec<&ArchiveFile> = files.iter().filter(|f| f.bytes > 0).collect();
    let (state, video, error) = if usable.is_empty() {
        ("failed", None, Some("nothing was recorded (no publisher's media reached the recorder)".to_owned()))
    } else if app.config.archive.ffmpeg.trim().is_empty() {
        ("raw_only", None, Some("building the video is off (archive.ffmpeg is empty)".to_owned()))
    } else {
        let dir = app.archive.entry_dir(id);
        let inputs: Vec<compose::Input> = usable.iter().filter_map(|f| compose::Input::of(&dir, f)).collect();
        let c = &app.config.archive;
        match compose::compose(&c.ffmpeg, &inputs, (c.video_width, c.video_height), &dir.join(compose::VIDEO_NAME)).await {
            Ok(bytes) => ("ready", Some((compose::VIDEO_NAME, bytes as i64)), None),
            Err(e) => {
                tracing::error!(archive = %id, "the stage video was not built: {e}");
                ("raw_only", None, Some(e.to_string()))
            }
        }
    };
    if let Err(e) = app.store.set_archive_state(id, state, ended_at, video, error.as_deref()).await {
        tracing::error!(archive = %id, "{e}");
        return;
    }
    if let Ok(Some(row)) = app.store.archive(id).await {
        let files = app.store.archive_files(id).await.unwrap_or_default();
        let view = app.archive.view(&row, &files);
        app.hooks.emit("recording_ready", json!({ "room": row.room, "live_id": row.live_id, "archive": view }));
    }
}
