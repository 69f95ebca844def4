DROP INDEX revocations_recent;
DROP INDEX revocations_subject;
