-- 0003: every box owns a range of 65536 host ids (uid and gid), allocated
-- here so two boxes never share one, even across server processes. The range
-- number is an index; the sandbox package turns it into host ids. A deleted
-- row frees its range.
ALTER TABLE boxes ADD COLUMN id_range INTEGER CHECK (id_range >= 0 AND id_range < 16384);
UPDATE boxes SET id_range = (SELECT COUNT(*) FROM boxes AS b2 WHERE b2.id < boxes.id);
CREATE UNIQUE INDEX boxes_id_range ON boxes(id_range) WHERE id_range IS NOT NULL;
