ALTER TABLE revocations DROP COLUMN xact;
