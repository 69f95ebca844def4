DROP INDEX revocations_subject;
