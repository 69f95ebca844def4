-- :millions million audit events over the last 180 days, oldest first (ids follow time, as when
-- the service writes them), for `bench.sh --audit-export`. Run on a migrated, empty database.
\set ON_ERROR_STOP on
SELECT (:millions * 1000000)::bigint AS events \gset
BEGIN;
INSERT INTO audit_events (type, user_id, occurred_at, ip_address, user_agent, outcome, details)
SELECT (ARRAY['login.succeeded', 'login.failed', 'token.refreshed', 'session.revoked'])[i % 4 + 1],
       md5('authd-bench-user-' || (i % 100000))::uuid,
       now() - interval '180 days' + (i * (interval '180 days' / :events)),
       '10.0.' || (i % 250) || '.' || (i % 200), 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0',
       CASE WHEN i % 4 = 1 THEN 'failure' ELSE 'success' END,
       '{"session_id":"' || md5(i::text)::uuid || '"}'
FROM generate_series(1, :events) AS i;
COMMIT;
VACUUM ANALYZE audit_events;
