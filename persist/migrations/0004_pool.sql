-- 0004: the warm pool. A pooled box is a row with no owner (owner = '')
-- in the status the sandbox package calls pooled; a claim gives it an owner
-- with one conditional UPDATE. The index serves claims and pool counts.
-- pools holds what every server on the home shares about one engine's pool:
-- the target the last server with --pool set, and the last refill error
-- (doctor shows both with the pool's fill).
CREATE INDEX boxes_pool ON boxes(engine, status) WHERE owner = '';
CREATE TABLE pools (
    engine        TEXT PRIMARY KEY NOT NULL,
    target        INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    last_error_at INTEGER NOT NULL DEFAULT 0,  -- unix ms, 0: none
    updated_at    INTEGER NOT NULL             -- unix ms
) STRICT;
