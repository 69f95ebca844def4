DROP INDEX revocations_token_once;
