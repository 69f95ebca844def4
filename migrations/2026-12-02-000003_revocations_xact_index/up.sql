-- See revocations_xact: the re-read every AUTHD_REVOCATION_RESYNC_INTERVAL finds its rows here.
CREATE INDEX CONCURRENTLY revocations_xact ON revocations (xact);
