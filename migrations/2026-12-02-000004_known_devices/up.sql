-- The devices each account signed in from, as keyed digests of a user-agent family and a client
-- network (src/devices.rs): a sign-in from one not listed is news for the account's
-- owner. At most 100 per account are kept (the last seen). Without the key-encryption key
-- nothing here says where anyone was.
CREATE TABLE known_devices (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, fingerprint)
);
