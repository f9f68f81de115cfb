-- Recordings and the archive (issue #14). Portable as 0001 is: server-made text ids, BIGINT
-- unix-millisecond times.

-- One live's archive entry. state: 'recording' (the live is on) → 'processing' (ffmpeg builds
-- the stage video) → 'ready' (video_name is set), or 'raw_only' (no video could be built:
-- error says why; the raw files are there), or 'failed' (nothing usable).
CREATE TABLE archives (
    id           TEXT PRIMARY KEY,
    room         TEXT NOT NULL,
    live_id      TEXT NOT NULL,
    state        TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    video_name   TEXT,
    video_bytes  BIGINT,
    error        TEXT,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX archives_by_room ON archives (room, started_at);
CREATE INDEX archives_by_expiry ON archives (expires_at);
CREATE INDEX archives_by_live ON archives (live_id);

-- The raw files: one per publisher and stretch on stage (a publisher who leaves the stage and
-- comes back has two), which is also the stage's timeline.
CREATE TABLE archive_files (
    archive_id    TEXT NOT NULL,
    name          TEXT NOT NULL,
    identity      TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    started_at    BIGINT,
    ended_at      BIGINT,
    bytes         BIGINT NOT NULL,
    video_frames  BIGINT NOT NULL,
    audio_frames  BIGINT NOT NULL,
    video_codec   TEXT,
    width         BIGINT,
    height        BIGINT,
    error         TEXT,
    PRIMARY KEY (archive_id, name)
);
