-- The queries of `authd audit export` and of the daily archive, explained on the seeded table
-- (scripts/bench/seed-audit.sql), with the values the code would bind: events before an age of
-- 90 days, read in pages of 1000 ids (a range of the primary key up to the last id in range; the
-- time range is applied to the rows read), deleted in ranges of 10 000.
SELECT now() - interval '90 days' AS before,
       date_trunc('day', (SELECT min(occurred_at) FROM audit_events)) AS day_start \gset
SELECT :'day_start'::timestamptz + interval '1 day' AS day_end \gset

\echo '## last id before the cutoff (export)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT max(id + 0) FROM audit_events WHERE occurred_at < :'before';
SELECT max(id) AS last FROM audit_events WHERE occurred_at < :'before' \gset

\echo '## the first page (export)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM audit_events WHERE id > 0 AND id <= :last ORDER BY id LIMIT 1000;

\echo '## a page in the middle (export)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM audit_events WHERE id > :last / 2 AND id <= :last ORDER BY id LIMIT 1000;

\echo '## the oldest event (archive: which day comes first)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT min(occurred_at) FROM audit_events;

\echo '## last id of one day (archive)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT max(id + 0) FROM audit_events WHERE occurred_at < :'day_end' AND occurred_at >= :'day_start';
SELECT max(id + 0) AS day_last FROM audit_events WHERE occurred_at < :'day_end' AND occurred_at >= :'day_start' \gset

\echo '## a page of one day (archive)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM audit_events WHERE id > :day_last / 2 AND id <= :day_last ORDER BY id LIMIT 1000;

\echo '## deleting a range of 10 000 ids (rolled back)'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
DELETE FROM audit_events WHERE id BETWEEN 1 AND 10000;
ROLLBACK;
