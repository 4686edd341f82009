-- 0004: reserved for the warm pool (issue 14 part 1), which lands its own
-- 0004 migration; this placeholder keeps the versions contiguous until then
-- and must be deleted when that file arrives.
SELECT 1;
