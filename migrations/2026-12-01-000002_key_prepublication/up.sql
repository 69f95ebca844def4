-- A signing key is published before it signs (activates_at), stops signing at retired_at (set,
-- possibly ahead, when its successor is created), and can be dropped at once (revoked_at).
ALTER TABLE signing_keys ADD COLUMN activates_at TIMESTAMPTZ;
UPDATE signing_keys SET activates_at = created_at;
-- A binary from before this migration inserts without it: such a key signs from its creation.
ALTER TABLE signing_keys ALTER COLUMN activates_at SET DEFAULT now();
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL;
ALTER TABLE signing_keys ADD COLUMN revoked_at TIMESTAMPTZ;
