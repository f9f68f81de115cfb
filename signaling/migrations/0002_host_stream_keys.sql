-- A stream key may be minted for the host's seat: its encoder starts the live alone.
ALTER TABLE stream_keys ADD COLUMN seat TEXT NOT NULL DEFAULT 'cohost';
