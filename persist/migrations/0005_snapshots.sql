-- 0005: snapshots of boxes (disk, and for VMs memory), owned like boxes.
-- A row is 'creating' while its files are written (invisible to listings),
-- 'ready' once complete, 'deleting' while its files are removed; reconcile
-- finishes or undoes the rows a dead server left in the other two states.
CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY NOT NULL,      -- lower-case ULID
    owner           TEXT NOT NULL,
    name            TEXT,                           -- NULL when unnamed
    box_id          TEXT NOT NULL,                  -- the box it was taken of (may be gone since)
    engine          TEXT NOT NULL,
    image           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('creating', 'ready', 'deleting')),
    includes_memory INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,     -- disk space its files take
    spec            TEXT NOT NULL DEFAULT '{}',     -- the box's spec when taken, JSON
    files           TEXT NOT NULL DEFAULT '[]',     -- its files, JSON list of names in its directory
    created_at      INTEGER NOT NULL,               -- unix milliseconds
    updated_at      INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX snapshots_owner_name ON snapshots(owner, name) WHERE name IS NOT NULL;
