DROP INDEX CONCURRENTLY audit_events_type;
