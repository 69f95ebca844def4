-- ListUsers finds accounts by a prefix of the address or of the name (`LIKE 'prefix%'`). The
-- unique indexes compare by the database's collation, which a LIKE cannot use unless it is C;
-- this one and users_username_prefix answer it under any collation. Built concurrently, so
-- writes to users go on meanwhile (one index per migration: each must be its own statement).
CREATE INDEX CONCURRENTLY users_email_prefix ON users (email_normalized text_pattern_ops);
