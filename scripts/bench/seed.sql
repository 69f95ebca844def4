-- Seeds a migrated authd database for the scale bench (`scripts/bench.sh --scale`), with plain
-- SQL and no calls to authd. At :scale = 1 (psql -v scale=1): 1M users, 1M sessions, 500k live
-- revocations (one per revoked session) and 2M audit events, a tenth of them for one heavy user
-- (id md5('authd-bench-heavy')::uuid, printed at the end). Smaller scales shrink every count,
-- but the heavy user always has 500 events at least (ten pages), so that paging through them
-- costs the same work at every size.
-- The seeded accounts cannot log in (their password hash verifies nothing).
\set ON_ERROR_STOP on
SELECT greatest(1, (1000000 * :scale)::int) AS users,
       (1000000 * :scale)::int AS sessions,
       (500000 * :scale)::int AS revocations,
       greatest(500, (2000000 * :scale)::int) AS events \gset

BEGIN;
INSERT INTO users (id, email, email_normalized, username, username_normalized, password_hash,
                   email_verified, created_at, updated_at)
SELECT CASE WHEN i = 1 THEN md5('authd-bench-heavy')::uuid ELSE md5('authd-bench-user-' || i)::uuid END,
       'Seed' || i || '@Scale.Example', 'seed' || i || '@scale.example',
       'Seed' || i, 'seed' || i,
       '$argon2id$v=19$m=19456,t=2,p=1$c2VlZC1zYWx0LXNlZWQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
       i % 3 <> 0, now() - (i % 1000) * interval '1 hour', now() - (i % 1000) * interval '1 hour'
FROM generate_series(1, :users) AS i;

-- Sessions, spread over the users; every other one revoked a little while ago.
INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, revoked_at, ip_address,
                      user_agent, device_name)
SELECT md5('authd-bench-session-' || i)::uuid,
       CASE WHEN i % :users = 0 THEN md5('authd-bench-heavy')::uuid
            ELSE md5('authd-bench-user-' || (i % :users + 1))::uuid END,
       now() - interval '1 day', now() - interval '1 hour', now() + interval '29 days',
       CASE WHEN i % 2 = 0 THEN now() - (i % 1400) * interval '1 minute' END,
       '10.' || (i % 250) || '.' || (i / 250 % 250) || '.1', 'Mozilla/5.0 (X11; Linux x86_64)', 'seed'
FROM generate_series(1, :sessions) AS i;

-- A live revocation per revoked session, made within the last day (an entry lives as long as
-- the access tokens it covers, at most a day and five minutes).
INSERT INTO revocations (kind, subject_id, user_id, created_at, expires_at)
SELECT 'session', s.id::text, s.user_id, s.revoked_at, s.revoked_at + interval '1 day'
FROM sessions s
WHERE s.revoked_at IS NOT NULL
ORDER BY s.revoked_at
LIMIT :revocations;

-- Audit events: a tenth for the heavy user, the rest spread over the others, oldest first.
INSERT INTO audit_events (type, user_id, occurred_at, ip_address, user_agent, outcome, details)
SELECT (ARRAY['login.succeeded', 'login.failed', 'token.refreshed', 'session.revoked'])[i % 4 + 1],
       CASE WHEN i % 10 = 0 OR i % :users = 0 THEN md5('authd-bench-heavy')::uuid
            ELSE md5('authd-bench-user-' || (i % :users + 1))::uuid END,
       now() - (:events - i) * interval '1 second',
       '10.0.' || (i % 250) || '.1', 'Mozilla/5.0 (X11; Linux x86_64)',
       CASE WHEN i % 4 = 1 THEN 'failure' ELSE 'success' END, '{}'
FROM generate_series(1, :events) AS i;
COMMIT;

VACUUM ANALYZE;
SELECT :users AS users, :sessions AS sessions,
       (SELECT count(*) FROM revocations WHERE expires_at > now()) AS live_revocations,
       (SELECT count(*) FROM audit_events) AS audit_events,
       md5('authd-bench-heavy')::uuid AS heavy_user;
