-- 0002: columns the idle/TTL reaper needs.
ALTER TABLE boxes ADD COLUMN last_used_at   INTEGER NOT NULL DEFAULT 0;  -- unix ms
ALTER TABLE boxes ADD COLUMN idle_timeout_s INTEGER NOT NULL DEFAULT 0;  -- 0: server default
ALTER TABLE boxes ADD COLUMN expires_at     INTEGER NOT NULL DEFAULT 0;  -- unix ms, 0: never
UPDATE boxes SET last_used_at = updated_at;
CREATE INDEX boxes_expires_at ON boxes(expires_at) WHERE expires_at > 0;
