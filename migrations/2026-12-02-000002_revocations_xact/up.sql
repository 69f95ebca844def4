-- The transaction that recorded each revocation (its 64-bit id, as text as bigint). A re-read of
-- recent revocations asks for every row whose transaction had not ended when the previous read
-- began: commit order, not id order (ids are taken before commit) or the writer's clock. Rows
-- recorded before this column existed have none; they are read when a replica starts.
ALTER TABLE revocations ADD COLUMN xact BIGINT;
ALTER TABLE revocations ALTER COLUMN xact SET DEFAULT (pg_current_xact_id()::text::bigint);
