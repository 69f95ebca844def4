-- ListAuditEvents pages newest first by id. Filtered by type (with or without a user), a page
-- was otherwise found by walking the table backwards, all of it when the type is rare.
CREATE INDEX CONCURRENTLY audit_events_user_type ON audit_events (user_id, type, id);
