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

-- An identity its account unlinked: a later sign-in with it must not link it again by email;
-- only LinkProvider can.
CREATE TABLE identity_unlinks (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    unlinked_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, issuer, subject)
);
