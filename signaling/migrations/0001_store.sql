-- Onair's store, version 1. Portable SQL on purpose (SQLite now, PostgreSQL for many nodes):
-- ids are made by the server (no AUTOINCREMENT/SERIAL), times are unix milliseconds in BIGINT,
-- flags are BOOLEAN, upserts use ON CONFLICT ... DO UPDATE, which both engines speak.

-- Stream keys (studio feeds). Only the SHA-256 of a key is kept.
CREATE TABLE stream_keys (
    id          TEXT PRIMARY KEY,
    room        TEXT NOT NULL,
    label       TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX stream_keys_by_room ON stream_keys (room);

-- One row per live: a room's run from its first participant to its end. Chat settings are the
-- live's (comments on/off, slow mode, blocked words; NULL words = the server's default list).
CREATE TABLE lives (
    id                TEXT PRIMARY KEY,
    room              TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    ended_at          BIGINT,
    comments_enabled  BOOLEAN NOT NULL DEFAULT TRUE,
    slow_mode_secs    INTEGER NOT NULL DEFAULT 0,
    blocked_words     TEXT
);
CREATE INDEX lives_by_room ON lives (room, ended_at);

-- Comments. visibility: 'public', 'restricted' (shadow: its author only), 'blocked' (matched a
-- blocked word: its author only). A deleted comment keeps its row for the audit log.
CREATE TABLE comments (
    id          BIGINT PRIMARY KEY,
    live_id     TEXT NOT NULL,
    identity    TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    visibility  TEXT NOT NULL,
    deleted_at  BIGINT,
    deleted_by  TEXT
);
CREATE INDEX comments_by_live ON comments (live_id, id);

-- Total reactions per live and emoji.
CREATE TABLE reactions (
    live_id  TEXT NOT NULL,
    emoji    TEXT NOT NULL,
    total    BIGINT NOT NULL,
    PRIMARY KEY (live_id, emoji)
);

-- Moderation state of one identity in one live. moderator: NULL (as the token says),
-- 'granted' (appointed by the host), 'revoked' (a moderator token no longer moderates).
CREATE TABLE members (
    live_id        TEXT NOT NULL,
    identity       TEXT NOT NULL,
    moderator      TEXT,
    banned         BOOLEAN NOT NULL DEFAULT FALSE,
    restricted     BOOLEAN NOT NULL DEFAULT FALSE,
    timeout_until  BIGINT,
    PRIMARY KEY (live_id, identity)
);

-- Viewers' reports of comments; moderators work the open ones.
CREATE TABLE reports (
    id           BIGINT PRIMARY KEY,
    live_id      TEXT NOT NULL,
    comment_id   BIGINT NOT NULL,
    reporter     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    resolved_by  TEXT,
    resolution   TEXT
);
CREATE INDEX reports_by_live ON reports (live_id, resolved_at);

-- Every moderation action: who, what, to whom, when.
CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY,
    live_id     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_log_by_live ON audit_log (live_id, id);
