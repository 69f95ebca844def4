-- See revocations_xact: the re-read every AUTHD_REVOCATION_RESYNC_INTERVAL finds its rows here.
-- Built in the migration's transaction, not CONCURRENTLY: the table holds only revocations that
-- still matter (a day at most), and a concurrent build that fails leaves an invalid index that
-- stops every later migration. An earlier release built it CONCURRENTLY; one left invalid by a
-- failed build is replaced.
DROP INDEX IF EXISTS revocations_xact;
CREATE INDEX revocations_xact ON revocations (xact);
