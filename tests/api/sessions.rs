use crate::helpers::*;
use authd::proto::*;
use tonic::Code;

async fn refresh(app: &TestApp, token: &str) -> Result<TokenPair, tonic::Status> {
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.unwrap())
}

#[tokio::test]
async fn refresh_rotates_and_a_replay_ends_the_session() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let first = app.user("hal").await;
    let second = refresh(&app, &first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.session_id, first.session_id);
    assert!(app.is_active(&introspector, &second.access_token).await);
    // The used token replayed: refused, and the whole session ends with it.
    assert_eq!(
        refresh(&app, &first.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        refresh(&app, &second.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(!app.is_active(&introspector, &second.access_token).await);
    assert!(!app.is_active(&introspector, &first.access_token).await);
    assert_eq!(
        refresh(&app, "not-a-token").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(refresh(&app, "").await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn of_sixteen_parallel_refreshes_exactly_one_succeeds() {
    let app = spawn_app().await;
    let tokens = app.user("ivy").await;
    let attempts = (0..16).map(|_| {
        let mut client = app.auth();
        let token = tokens.refresh_token.clone();
        async move { client.refresh(RefreshRequest { refresh_token: token }).await }
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code() == Code::Unauthenticated)
    );
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    use diesel::sql_types::Bytea;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        token_hash: Vec<u8>,
    }
    let app = spawn_app().await;
    let tokens = app.user("jan").await;
    let mut db = app.db().await;
    let rows: Vec<Row> = diesel::sql_query("SELECT token_hash FROM refresh_tokens")
        .load(&mut db)
        .await
        .unwrap();
    assert!(!rows.is_empty());
    use sha2::Digest;
    let expected = sha2::Sha256::digest(tokens.refresh_token.as_bytes()).to_vec();
    assert!(rows.iter().any(|r| r.token_hash == expected));
    assert!(rows.iter().all(|r| r.token_hash != tokens.refresh_token.as_bytes()));
    // At least 256 bits: 43 base64url characters.
    assert!(tokens.refresh_token.len() >= 43);
}

#[tokio::test]
async fn logout_by_refresh_token_or_bearer_ends_the_session() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    app.register("kim").await;
    let a = app.login("kim", PASSWORD).await;
    let b = app.login("kim", PASSWORD).await;
    app.auth()
        .logout(LogoutRequest {
            refresh_token: a.refresh_token.clone(),
        })
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &a.access_token).await);
    assert_eq!(app.get_me_code(&a.access_token).await, Code::Unauthenticated);
    assert_eq!(
        refresh(&app, &a.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(
        app.is_active(&introspector, &b.access_token).await,
        "the other session is untouched"
    );
    app.auth()
        .logout(bearer(LogoutRequest::default(), &b.access_token))
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &b.access_token).await);
    assert_eq!(app.get_me_code(&b.access_token).await, Code::Unauthenticated);
    assert_eq!(
        refresh(&app, &b.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let nothing = app.auth().logout(LogoutRequest::default()).await.unwrap_err();
    assert_eq!(nothing.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn list_and_revoke_sessions() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    app.register("lee").await;
    let phone = app
        .auth()
        .login(LoginRequest {
            identifier: "lee".into(),
            password: PASSWORD.into(),
            device_name: Some("phone".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let laptop = app.login("lee", PASSWORD).await;
    let tablet = app.login("lee", PASSWORD).await;
    let sessions = app
        .sessions()
        .list_sessions(bearer(ListSessionsRequest {}, &laptop.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 3);
    let current: Vec<_> = sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, laptop.session_id);
    let on_phone = sessions.iter().find(|s| s.id == phone.session_id).unwrap();
    assert_eq!(on_phone.device_name, "phone");
    assert_eq!(on_phone.ip_address, "127.0.0.1");
    assert!(on_phone.user_agent.contains("tonic"), "{}", on_phone.user_agent);
    assert!(on_phone.created_at.is_some() && on_phone.last_used_at.is_some() && on_phone.expires_at.is_some());

    // Someone else's session: NOT_FOUND, and it stays alive.
    let other = app.user("moe").await;
    let err = app
        .sessions()
        .revoke_session(bearer(
            RevokeSessionRequest {
                session_id: phone.session_id.clone(),
            },
            &other.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(app.is_active(&introspector, &phone.access_token).await);

    app.sessions()
        .revoke_session(bearer(
            RevokeSessionRequest {
                session_id: phone.session_id.clone(),
            },
            &laptop.access_token,
        ))
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &phone.access_token).await);
    assert_eq!(app.get_me_code(&phone.access_token).await, Code::Unauthenticated);
    assert_eq!(
        refresh(&app, &phone.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let revoked = app
        .sessions()
        .revoke_all_sessions(bearer(
            RevokeAllSessionsRequest { keep_current: true },
            &laptop.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);
    assert!(app.is_active(&introspector, &laptop.access_token).await);
    assert!(!app.is_active(&introspector, &tablet.access_token).await);
    assert_eq!(app.get_me_code(&tablet.access_token).await, Code::Unauthenticated);
    assert_eq!(app.get_me_code(&laptop.access_token).await, Code::Ok);
    assert_eq!(
        refresh(&app, &tablet.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.sessions()
        .revoke_all_sessions(bearer(
            RevokeAllSessionsRequest { keep_current: false },
            &laptop.access_token,
        ))
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &laptop.access_token).await);
    assert!(
        app.is_active(&introspector, &other.access_token).await,
        "other users are untouched"
    );
}

#[tokio::test]
async fn a_login_beyond_the_session_limit_ends_the_oldest() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    app.register("nia").await;
    let mut logins = Vec::new();
    for _ in 0..6 {
        logins.push(app.login("nia", PASSWORD).await);
    }
    assert!(!app.is_active(&introspector, &logins[0].access_token).await);
    for login in &logins[1..] {
        assert!(app.is_active(&introspector, &login.access_token).await);
    }
}

/// The statements a login and a refresh run are prepared once per connection and kept, not
/// prepared anew on every call (diesel does that for an `UPDATE` or a raw statement unless it
/// is told the text is fixed): a prepared statement the connection keeps shows in
/// `pg_prepared_statements`, one prepared for a single call is closed after it.
#[tokio::test]
async fn login_and_refresh_statements_stay_prepared() {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = Text)]
        statement: String,
    }
    // One connection: every statement below runs on it.
    let app = spawn_app_with(&[("AUTHD_DATABASE_POOL_SIZE", "1"), ("AUTHD_MAX_SESSIONS_PER_USER", "1")]).await;
    let first = app.user("pia").await;
    // Past the session limit: the oldest session ends.
    let second = app.login("pia", PASSWORD).await;
    refresh(&app, &second.refresh_token).await.unwrap();
    assert_eq!(
        refresh(&app, &first.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut conn = app.app.pool.get().await.unwrap();
    let prepared: Vec<String> = diesel::sql_query("SELECT statement FROM pg_prepared_statements")
        .load::<Prepared>(&mut *conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.statement)
        .collect();
    let count = |needle: &str| prepared.iter().filter(|s| s.contains(needle)).count();
    for needle in [
        "ARRAY(SELECT provider",
        "UPDATE \"users\" SET \"last_login_at\"",
        "row_number() OVER",
        "UPDATE \"refresh_tokens\"",
        "INSERT INTO \"sessions\"",
        "INSERT INTO \"audit_events\"",
        "INSERT INTO \"refresh_tokens\"",
        "INSERT INTO \"revocations\"",
    ] {
        assert_eq!(count(needle), 1, "{needle}: {prepared:#?}");
    }
}
