ALTER TABLE signing_keys DROP COLUMN revoked_at;
ALTER TABLE signing_keys DROP COLUMN activates_at;
