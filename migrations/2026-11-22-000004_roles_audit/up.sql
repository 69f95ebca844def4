-- Locks, and the audit trail.

-- Why `locked_until` is set: 'lockout' (failed logins; a password reset lifts it) or 'admin'
-- (LockUser; only UnlockUser lifts it).
ALTER TABLE users ADD COLUMN lock_reason TEXT;

CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    -- e.g. 'login.succeeded', 'login.failed', 'session.revoked'.
    type        TEXT NOT NULL,
    -- The account concerned, when known; kept after the account is purged.
    user_id     UUID,
    occurred_at TIMESTAMPTZ NOT NULL,
    ip_address  TEXT,
    user_agent  TEXT,
    -- 'success' or 'failure'.
    outcome     TEXT NOT NULL,
    -- Event-specific facts as a JSON object; never a secret.
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_time ON audit_events (occurred_at);
