DROP TABLE audit_events;
ALTER TABLE users DROP COLUMN lock_reason;
