DROP INDEX revocations_xact;
