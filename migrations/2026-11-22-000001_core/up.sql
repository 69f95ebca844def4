-- Accounts, sessions with their refresh tokens, API keys, signing keys and revocations.

CREATE TABLE users (
    id                  UUID PRIMARY KEY,
    email               TEXT NOT NULL,
    -- Trimmed and lower-cased: what uniqueness and look-ups compare.
    email_normalized    TEXT NOT NULL UNIQUE,
    username            TEXT NOT NULL,
    username_normalized TEXT NOT NULL UNIQUE,
    -- PHC string (argon2id); NULL for accounts that only sign in through a provider.
    password_hash       TEXT,
    email_verified      BOOLEAN NOT NULL DEFAULT FALSE,
    roles               TEXT[] NOT NULL DEFAULT '{user}',
    active              BOOLEAN NOT NULL DEFAULT TRUE,
    locked_until        TIMESTAMPTZ,
    failed_logins       INTEGER NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    last_login_at       TIMESTAMPTZ
);

CREATE TABLE sessions (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    ip_address   TEXT,
    user_agent   TEXT,
    device_name  TEXT
);
CREATE INDEX sessions_user_live ON sessions (user_id) WHERE revoked_at IS NULL;

-- One row per refresh token ever issued; only the SHA-256 of the token is kept.
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- Set when the token is exchanged; a second exchange is a replay.
    used_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id                   UUID PRIMARY KEY,
    user_id              UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label                TEXT NOT NULL,
    -- The public start of the key, unique: how a presented key finds its row.
    prefix               TEXT NOT NULL UNIQUE,
    secret_hash          BYTEA NOT NULL,
    -- The secret replaced by the last rotation, valid until previous_expires_at.
    previous_secret_hash BYTEA,
    previous_expires_at  TIMESTAMPTZ,
    scopes               TEXT[] NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ,
    last_used_at         TIMESTAMPTZ,
    revoked_at           TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE signing_keys (
    kid                   TEXT PRIMARY KEY,
    alg                   TEXT NOT NULL,
    -- The public key as a JWK (JSON text); never holds private members.
    public_jwk            TEXT NOT NULL,
    -- PKCS#8 DER of the private key, sealed with XChaCha20-Poly1305 under the key-encryption key.
    private_key_encrypted BYTEA NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    -- When a newer key took over signing; published until its last token expires.
    retired_at            TIMESTAMPTZ
);

-- Every revocation, so that each replica can rebuild its in-process view at start.
CREATE TABLE revocations (
    id         BIGSERIAL PRIMARY KEY,
    -- 'session', 'user', 'api_key' or 'token'.
    kind       TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    user_id    UUID,
    created_at TIMESTAMPTZ NOT NULL,
    -- After this instant every credential the entry concerns has expired anyway.
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX revocations_expiry ON revocations (expires_at);
