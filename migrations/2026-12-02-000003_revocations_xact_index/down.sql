DROP INDEX CONCURRENTLY revocations_xact;
