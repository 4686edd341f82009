-- 0001: boxes and host state.
CREATE TABLE boxes (
    id            TEXT PRIMARY KEY NOT NULL,        -- lower-case ULID
    owner         TEXT NOT NULL,
    name          TEXT,                             -- NULL when unnamed
    engine        TEXT NOT NULL,
    image         TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    spec          TEXT NOT NULL DEFAULT '{}',       -- resource spec, JSON
    engine_state  TEXT NOT NULL DEFAULT '',         -- engine reattach handle, JSON
    created_at    INTEGER NOT NULL,                 -- unix milliseconds
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX boxes_owner_name ON boxes(owner, name) WHERE name IS NOT NULL;
CREATE INDEX boxes_status ON boxes(status);

CREATE TABLE host_state (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
