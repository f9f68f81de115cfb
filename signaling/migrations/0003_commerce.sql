-- Supporter badges and product pins (issue #15). Portable as 0001 is.

-- Payments the platform's payment provider told us about (POST /api/v1/payments). `id` is the
-- provider's payment id: the same id twice is one payment. A refund sets refunded_at and keeps
-- the row (the live's totals count only what was not refunded).
CREATE TABLE payments (
    id            TEXT PRIMARY KEY,
    live_id       TEXT NOT NULL,
    room          TEXT NOT NULL,
    identity      TEXT NOT NULL,
    name          TEXT NOT NULL,
    tier          INTEGER NOT NULL,
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    refund_id     TEXT,
    refunded_at   BIGINT
);
CREATE INDEX payments_by_live ON payments (live_id, received_at);
CREATE UNIQUE INDEX payments_by_refund ON payments (refund_id);

-- A room's product catalog: every live of the room can pin from it. Prices in minor units.
CREATE TABLE products (
    id            TEXT PRIMARY KEY,
    room          TEXT NOT NULL,
    title         TEXT NOT NULL,
    price_minor   BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    image_url     TEXT NOT NULL,
    checkout_url  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE INDEX products_by_room ON products (room, deleted_at);

-- Uploaded product images. BYTEA is PostgreSQL's binary type; SQLite keeps a blob as given in a
-- column of that (numeric-affinity) type.
CREATE TABLE product_images (
    product_id    TEXT PRIMARY KEY,
    content_type  TEXT NOT NULL,
    bytes         BYTEA NOT NULL,
    version       BIGINT NOT NULL
);

-- Views (pages that showed the pinned card) and clicks (on its checkout button), per live.
CREATE TABLE product_stats (
    live_id     TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    views       BIGINT NOT NULL DEFAULT 0,
    clicks      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (live_id, product_id)
);

-- The product pinned in a live now (NULL: none).
ALTER TABLE lives ADD COLUMN pinned_product TEXT;
