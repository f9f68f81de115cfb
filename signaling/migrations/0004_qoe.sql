-- Player QoE and problem reports (issue #13). Portable as 0001 is.

-- A live's KPIs as the players reported them, written when the live ends (JSON: see
-- docs/operations.md "KPIs"), and its profile family.
ALTER TABLE lives ADD COLUMN profile TEXT;
ALTER TABLE lives ADD COLUMN kpis TEXT;

-- "Report a problem" from a viewer's page, with the QoE and context the page attached.
CREATE TABLE problem_reports (
    id          BIGINT PRIMARY KEY,
    live_id     TEXT NOT NULL,
    room        TEXT NOT NULL,
    identity    TEXT NOT NULL,
    tag         TEXT NOT NULL,
    body        TEXT NOT NULL,
    qoe         TEXT,
    context     TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX problem_reports_by_time ON problem_reports (created_at);
CREATE INDEX problem_reports_by_tag ON problem_reports (tag, created_at);
