-- See audit_events_user_type.
CREATE INDEX CONCURRENTLY audit_events_type ON audit_events (type, id);
