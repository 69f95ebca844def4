DROP INDEX CONCURRENTLY users_username_prefix;
