use crate::helpers::*;
use authd::proto::*;
use tonic::Code;

async fn create(app: &TestApp, bearer_token: &str, scopes: &[&str]) -> Result<CreateApiKeyResponse, tonic::Status> {
    app.api_keys()
        .create_api_key(bearer(
            CreateApiKeyRequest {
                label: "ci".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at: None,
            },
            bearer_token,
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn api_key_lifecycle() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let user = app.user("olga").await;
    let created = create(&app, &user.access_token, &["tasks:write", "tasks:read"])
        .await
        .unwrap();
    let key = created.api_key.unwrap();
    let secret = created.secret;
    assert!(secret.len() >= 40, "{} characters", secret.len());
    assert!(
        secret.starts_with(&key.prefix),
        "the secret begins with the public prefix"
    );
    assert!(key.prefix.starts_with("authd_"));
    assert_eq!(key.scopes, vec!["tasks:read", "tasks:write"]);

    let listed = app
        .api_keys()
        .list_api_keys(bearer(ListApiKeysRequest {}, &user.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    assert!(
        !format!("{listed:?}").contains(&secret[key.prefix.len()..]),
        "the list never holds the secret"
    );

    let seen = app.introspect(&introspector, &secret).await;
    assert!(seen.active);
    assert_eq!(seen.token_type, "api_key");
    assert_eq!(seen.scope, "tasks:read tasks:write");
    assert_eq!(seen.username, "olga");

    // One character changed anywhere in the secret part: inactive.
    let mut chars: Vec<char> = secret.chars().collect();
    let i = key.prefix.len() + 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(!app.is_active(&introspector, &tampered).await);
    // The same change with a recomputed, valid checksum: refused by the hash, not the checksum.
    let body_len = secret.len() - 6;
    let mut body: Vec<char> = secret[..body_len].chars().collect();
    body[i] = if body[i] == 'A' { 'B' } else { 'A' };
    let forged = authd::api_keys::format::with_checksum(&body.into_iter().collect::<String>());
    assert!(authd::api_keys::format::parse(&forged).is_some(), "well-formed");
    assert!(!app.is_active(&introspector, &forged).await);

    // The key authenticates its owner's RPCs.
    assert_eq!(app.get_me_code(&secret).await, Code::Ok);

    let rotated = app
        .api_keys()
        .rotate_api_key(bearer(
            RotateApiKeyRequest {
                id: key.id.clone(),
                grace_period: None,
            },
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, secret);
    assert!(rotated.secret.starts_with(&key.prefix));
    assert!(
        !app.is_active(&introspector, &secret).await,
        "no grace: the old secret stops at once"
    );
    assert!(app.is_active(&introspector, &rotated.secret).await);

    app.api_keys()
        .revoke_api_key(bearer(RevokeApiKeyRequest { id: key.id.clone() }, &user.access_token))
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &rotated.secret).await);
    assert_eq!(app.get_me_code(&rotated.secret).await, Code::Unauthenticated);
    let listed = app
        .api_keys()
        .list_api_keys(bearer(ListApiKeysRequest {}, &user.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.api_keys[0].revoked_at.is_some());
    assert!(listed.api_keys[0].last_used_at.is_some());
}

#[tokio::test]
async fn rotation_with_a_grace_period_keeps_the_old_secret_for_a_while() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let user = app.user("pia").await;
    let created = create(&app, &user.access_token, &["tasks:read"]).await.unwrap();
    let rotated = app
        .api_keys()
        .rotate_api_key(bearer(
            RotateApiKeyRequest {
                id: created.api_key.unwrap().id,
                grace_period: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            },
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(app.is_active(&introspector, &created.secret).await);
    assert!(app.is_active(&introspector, &rotated.secret).await);
    app.clock.advance(std::time::Duration::from_secs(601));
    assert!(!app.is_active(&introspector, &created.secret).await);
}

#[tokio::test]
async fn scopes_are_limited_by_the_owner_and_validated() {
    let app = spawn_app().await;
    let user = app.user("quin").await;
    let denied = create(&app, &user.access_token, &["tokens:introspect"])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let invalid = create(&app, &user.access_token, &["Not A Scope"]).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&invalid).as_deref(), Some("scopes"));
    // Another user's key cannot be revoked or rotated: NOT_FOUND.
    let key = create(&app, &user.access_token, &["tasks:read"])
        .await
        .unwrap()
        .api_key
        .unwrap();
    let other = app.user("rae").await;
    let err = app
        .api_keys()
        .revoke_api_key(bearer(RevokeApiKeyRequest { id: key.id.clone() }, &other.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A key without tokens:introspect cannot introspect, nor mint a key with more than it holds.
    let weak = create(&app, &user.access_token, &["tasks:read"]).await.unwrap().secret;
    let err = app
        .tokens()
        .introspect(bearer(IntrospectRequest::default(), &weak))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = create(&app, &weak, &["tasks:write"]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn secrets_are_stored_only_as_hashes() {
    use diesel::sql_types::Bytea;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        secret_hash: Vec<u8>,
    }
    let app = spawn_app().await;
    let user = app.user("sol").await;
    let secret = create(&app, &user.access_token, &["tasks:read"]).await.unwrap().secret;
    let mut db = app.db().await;
    let rows: Vec<Row> = diesel::sql_query("SELECT secret_hash FROM api_keys")
        .load(&mut db)
        .await
        .unwrap();
    use sha2::Digest;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].secret_hash, sha2::Sha256::digest(secret.as_bytes()).to_vec());
}

#[tokio::test]
async fn an_api_key_cannot_manage_its_owners_account() {
    let app = spawn_app().await;
    let user = app.user("tia").await;
    let key = create(&app, &user.access_token, &["tasks:read"]).await.unwrap();
    let secret = key.secret.clone();
    let id = key.api_key.unwrap().id;
    let denied = |result: Result<(), tonic::Status>, what: &str| {
        assert_eq!(result.unwrap_err().code(), Code::PermissionDenied, "{what}");
    };
    denied(create(&app, &secret, &["tasks:read"]).await.map(drop), "CreateApiKey");
    denied(
        app.api_keys()
            .rotate_api_key(bearer(
                RotateApiKeyRequest {
                    id: id.clone(),
                    grace_period: None,
                },
                &secret,
            ))
            .await
            .map(drop),
        "RotateApiKey",
    );
    denied(
        app.api_keys()
            .revoke_api_key(bearer(RevokeApiKeyRequest { id: id.clone() }, &secret))
            .await
            .map(drop),
        "RevokeApiKey",
    );
    denied(
        app.api_keys()
            .list_api_keys(bearer(ListApiKeysRequest {}, &secret))
            .await
            .map(drop),
        "ListApiKeys",
    );
    denied(
        app.sessions()
            .list_sessions(bearer(ListSessionsRequest {}, &secret))
            .await
            .map(drop),
        "ListSessions",
    );
    denied(
        app.sessions()
            .revoke_all_sessions(bearer(RevokeAllSessionsRequest { keep_current: false }, &secret))
            .await
            .map(drop),
        "RevokeAllSessions",
    );
    denied(
        app.auth()
            .change_password(bearer(
                ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "another password".into(),
                },
                &secret,
            ))
            .await
            .map(drop),
        "ChangePassword",
    );
    denied(
        app.users()
            .update_me(bearer(
                UpdateMeRequest {
                    username: Some("tia2".into()),
                    email: None,
                    current_password: None,
                },
                &secret,
            ))
            .await
            .map(drop),
        "UpdateMe",
    );
    // Reading the profile is fine.
    assert_eq!(app.get_me_code(&secret).await, Code::Ok);
}

#[tokio::test]
async fn an_admins_scoped_key_has_only_its_scopes() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let admin = app.admin().await;
    let admin_key = create(&app, &admin.access_token, &["tasks:read"]).await.unwrap().secret;
    let victim = app.user("uli").await;
    // Not Introspect, not admin RPCs, and Revoke of someone else's token does nothing.
    let err = app
        .tokens()
        .introspect(bearer(IntrospectRequest::default(), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .users()
        .list_users(bearer(ListUsersRequest::default(), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for token in [&victim.access_token, &victim.refresh_token] {
        app.tokens()
            .revoke(bearer(
                RevokeRequest {
                    token: token.clone(),
                    token_type_hint: String::new(),
                },
                &admin_key,
            ))
            .await
            .unwrap();
    }
    assert!(app.is_active(&introspector, &victim.access_token).await);
}

#[tokio::test]
async fn the_scopes_plain_users_may_grant_are_configurable() {
    let app = spawn_app_with(&[("AUTHD_USER_GRANTABLE_SCOPES", "tasks:read, reports:read")]).await;
    let user = app.user("vic").await;
    create(&app, &user.access_token, &["tasks:read"])
        .await
        .expect("listed: grantable");
    let denied = create(&app, &user.access_token, &["tasks:write"]).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "not listed: refused");
    let admin = app.admin().await;
    create(&app, &admin.access_token, &["tasks:write", "tokens:introspect"])
        .await
        .expect("admins grant any scope");
}
