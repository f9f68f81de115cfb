-- Scheduled lives and outgoing webhooks (issue #14). Portable as 0001 is: server-made text ids,
-- BIGINT unix-millisecond times, BOOLEAN, BYTEA (a BLOB in SQLite).

-- A live announced ahead. state: 'scheduled' → 'live' (its host went live: live_id) → 'ended';
-- or 'cancelled'. A start the host asked for ahead of going live is 'starting'.
CREATE TABLE scheduled_lives (
    id              TEXT PRIMARY KEY,
    room            TEXT NOT NULL,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL,
    starts_at       BIGINT NOT NULL,
    profile         TEXT,
    state           TEXT NOT NULL,
    live_id         TEXT,
    banner          BYTEA,
    banner_type     TEXT,
    banner_version  BIGINT NOT NULL DEFAULT 0,
    reminded_early  BOOLEAN NOT NULL DEFAULT FALSE,
    reminded_start  BOOLEAN NOT NULL DEFAULT FALSE,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX scheduled_lives_by_room ON scheduled_lives (room, state, starts_at);
CREATE INDEX scheduled_lives_by_state ON scheduled_lives (state, starts_at);
CREATE INDEX scheduled_lives_by_live ON scheduled_lives (live_id);

-- "Remind me": who asked, by identity.
CREATE TABLE schedule_reminders (
    schedule_id  TEXT NOT NULL,
    identity     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, identity)
);

-- Every webhook message and how its delivery went. state: 'pending' (next attempt at next_at),
-- 'delivered', 'failed' (attempts used up, or the receiver answered 410 Gone).
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    event         TEXT NOT NULL,
    url           TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       BIGINT NOT NULL,
    last_status   INTEGER,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (created_at);
