DROP TABLE revocations;
DROP TABLE signing_keys;
DROP TABLE api_keys;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE users;
