-- Identities at OpenID providers, linked to accounts. The key is (issuer, subject): an email
-- address is never what finds an account once it is linked.
CREATE TABLE user_identities (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The address the provider held at the last sign-in (for the audit trail and support only).
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    last_login_at TIMESTAMPTZ,
    UNIQUE (issuer, subject),
    UNIQUE (user_id, provider)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
