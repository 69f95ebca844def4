DROP TABLE mail_outbox;
DROP TABLE one_time_tokens;
DROP INDEX users_deletion_due;
ALTER TABLE users DROP COLUMN deletion_scheduled_for, DROP COLUMN deletion_requested_at;
