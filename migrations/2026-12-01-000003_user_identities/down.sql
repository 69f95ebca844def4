DROP TABLE identity_unlinks;
DROP TABLE user_identities;
