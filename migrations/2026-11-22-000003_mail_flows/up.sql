-- Account lifecycle by mail: one-time tokens, the mail outbox, and scheduled deletion.

ALTER TABLE users
    -- When a deletion confirmation mail was last requested (for GetAccountDeletionStatus).
    ADD COLUMN deletion_requested_at TIMESTAMPTZ,
    -- Set by ConfirmAccountDeletion; the purge job deletes the account after this instant.
    ADD COLUMN deletion_scheduled_for TIMESTAMPTZ;
CREATE INDEX users_deletion_due ON users (deletion_scheduled_for) WHERE deletion_scheduled_for IS NOT NULL;

-- Reset, verification and deletion tokens: only the SHA-256 of each is kept.
CREATE TABLE one_time_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 'verify_email', 'reset_password' or 'delete_account'.
    purpose    TEXT NOT NULL,
    -- The address the token was sent to (for verification: the address it verifies).
    email      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- Set when the token is spent or superseded by a newer one.
    used_at    TIMESTAMPTZ
);
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id, purpose);
CREATE INDEX one_time_tokens_expiry ON one_time_tokens (expires_at);

-- Mail written in the same transaction as the change that needs it, delivered by a worker.
CREATE TABLE mail_outbox (
    id              BIGSERIAL PRIMARY KEY,
    -- 'verify_email', 'reset_password' or 'delete_account'.
    kind            TEXT NOT NULL,
    -- Lower-cased, for the per-address limits.
    recipient       TEXT NOT NULL,
    -- Subject and bodies (which hold a one-time link) sealed with the key-encryption key;
    -- cleared once delivered.
    sealed_message  BYTEA,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- A worker's claim on the row while it delivers.
    lease_until     TIMESTAMPTZ,
    sent_at         TIMESTAMPTZ,
    -- Given up on after too many failures.
    failed_at       TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX mail_outbox_recipient ON mail_outbox (recipient, kind, created_at);
