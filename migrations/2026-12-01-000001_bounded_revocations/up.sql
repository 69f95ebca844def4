-- User-wide revocations get an end: API keys they covered are revoked in their own rows, and the
-- entries then only need to outlive access tokens (at most 24 hours by configuration).
UPDATE api_keys k
   SET revoked_at = r.created_at
  FROM revocations r
 WHERE r.kind = 'user'
   AND r.subject_id = k.user_id::text
   AND k.created_at < r.created_at
   AND k.revoked_at IS NULL;
UPDATE revocations
   SET expires_at = LEAST(expires_at, created_at + INTERVAL '1 day 5 minutes')
 WHERE kind = 'user';

-- Revoking one access token twice records it once.
DELETE FROM revocations a
 USING revocations b
 WHERE a.kind = 'token' AND b.kind = 'token' AND a.subject_id = b.subject_id AND a.id > b.id;
CREATE UNIQUE INDEX revocations_token_once ON revocations (subject_id) WHERE kind = 'token';

-- Failed logins no longer record the identifier as typed (people type passwords there).
-- (CASE keeps the cast to the rows of that type: Postgres does not promise to evaluate AND in order.)
UPDATE audit_events
   SET details = (details::jsonb - 'identifier')::text
 WHERE CASE WHEN type = 'login.failed' THEN details::jsonb ? 'identifier' ELSE false END;
