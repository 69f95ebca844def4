DROP INDEX CONCURRENTLY audit_events_user_type;
