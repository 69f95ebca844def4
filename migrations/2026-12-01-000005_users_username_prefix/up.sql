-- See users_email_prefix.
CREATE INDEX CONCURRENTLY users_username_prefix ON users (username_normalized text_pattern_ops);
