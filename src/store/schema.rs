// @generated-style: mirrors `migrations/`, in the layout `diesel print-schema` writes.
// Keep it in step with every migration (the test suite migrates a real database and uses it).

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        user_id -> Uuid,
        label -> Text,
        prefix -> Text,
        secret_hash -> Bytea,
        previous_secret_hash -> Nullable<Bytea>,
        previous_expires_at -> Nullable<Timestamptz>,
        scopes -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Int8,
        #[sql_name = "type"]
        event_type -> Text,
        user_id -> Nullable<Uuid>,
        occurred_at -> Timestamptz,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        outcome -> Text,
        details -> Text,
    }
}

diesel::table! {
    known_devices (user_id, fingerprint) {
        user_id -> Uuid,
        fingerprint -> Text,
        first_seen -> Timestamptz,
        last_seen -> Timestamptz,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> Int8,
        kind -> Text,
        recipient -> Text,
        sealed_message -> Nullable<Bytea>,
        created_at -> Timestamptz,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        sent_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    mail_requests (id) {
        id -> Int8,
        kind -> Text,
        email -> Text,
        requested_at -> Timestamptz,
    }
}

diesel::table! {
    one_time_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        purpose -> Text,
        email -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    revocations (id) {
        id -> Int8,
        kind -> Text,
        subject_id -> Text,
        user_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        xact -> Nullable<Int8>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        device_name -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        public_jwk -> Text,
        private_key_encrypted -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
        activates_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        email_normalized -> Text,
        username -> Text,
        username_normalized -> Text,
        password_hash -> Nullable<Text>,
        email_verified -> Bool,
        roles -> Array<Text>,
        active -> Bool,
        locked_until -> Nullable<Timestamptz>,
        failed_logins -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
                last_login_at -> Nullable<Timestamptz>,
        deletion_requested_at -> Nullable<Timestamptz>,
                deletion_scheduled_for -> Nullable<Timestamptz>,
        lock_reason -> Nullable<Text>,
    }
}

diesel::table! {
    identity_unlinks (user_id, issuer, subject) {
        user_id -> Uuid,
        issuer -> Text,
        subject -> Text,
        unlinked_at -> Timestamptz,
    }
}

diesel::table! {
    user_identities (id) {
        id -> Uuid,
        user_id -> Uuid,
        provider -> Text,
        issuer -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamptz,
        last_login_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(user_identities -> users (user_id));
diesel::joinable!(identity_unlinks -> users (user_id));
diesel::joinable!(known_devices -> users (user_id));
diesel::joinable!(one_time_tokens -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    audit_events,
    identity_unlinks,
    known_devices,
    mail_outbox,
    mail_requests,
    one_time_tokens,
    refresh_tokens,
    revocations,
    sessions,
    signing_keys,
    user_identities,
    users,
);
