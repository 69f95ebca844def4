-- Requests for a mail that names an address (RequestPasswordReset, SendVerificationEmail,
-- RequestAccountDeletion), written before the call is answered and deleted in the transaction
-- that handles them: a replica killed after answering leaves its requests to the others.
CREATE TABLE mail_requests (
    id           BIGSERIAL PRIMARY KEY,
    -- 'verify_email', 'reset_password' or 'delete_account'.
    kind         TEXT NOT NULL,
    -- As given (it may belong to no account); lower-cased.
    email        TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX mail_requests_requested_at ON mail_requests (requested_at);
