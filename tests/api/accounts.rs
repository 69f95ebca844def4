use crate::helpers::*;
use authd::proto::*;
use std::time::{Duration, Instant};
use tonic::Code;

async fn register_err(app: &TestApp, email: &str, username: &str, password: &str) -> tonic::Status {
    app.auth()
        .register(RegisterRequest {
            email: email.into(),
            username: username.into(),
            password: password.into(),
        })
        .await
        .expect_err("registration should be refused")
}

#[tokio::test]
async fn register_refuses_bad_input_naming_the_field() {
    let app = spawn_app().await;
    for (email, username, password, field) in [
        ("not-an-email", "alice", PASSWORD, "email"),
        ("", "alice", PASSWORD, "email"),
        ("alice@example.com", "alice", "short", "password"),
        ("alice@example.com", "", PASSWORD, "username"),
        ("alice@example.com", "a b", PASSWORD, "username"),
    ] {
        let status = register_err(&app, email, username, password).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?} {username:?}");
        assert_eq!(bad_request_field(&status).as_deref(), Some(field), "{status:?}");
        assert!(status.message().starts_with(field));
    }
}

#[tokio::test]
async fn emails_and_usernames_are_unique_case_insensitively() {
    let app = spawn_app().await;
    let user = app
        .auth()
        .register(RegisterRequest {
            email: "  Alice@Example.com ".into(),
            username: "Alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "Alice@Example.com", "trimmed, case kept");
    assert_eq!(user.roles, vec!["user"]);
    assert!(!user.email_verified);
    let status = register_err(&app, "ALICE@example.COM", "someone", PASSWORD).await;
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = register_err(&app, "other@example.com", "aLiCe", PASSWORD).await;
    assert_eq!(status.code(), Code::AlreadyExists);
    // The Kelvin sign is not the letter K: a different address, not a collision.
    app.auth()
        .register(RegisterRequest {
            email: "\u{212a}ate@example.com".into(),
            username: "kelvin".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    app.auth()
        .register(RegisterRequest {
            email: "kate@example.com".into(),
            username: "kate".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("kate is not the Kelvin-sign address");
}

#[tokio::test]
async fn a_huge_password_is_refused_quickly_without_hashing() {
    let app = spawn_app().await;
    let hashes = app.app.hasher.operations();
    let started = Instant::now();
    let status = register_err(&app, "big@example.com", "big", &"p".repeat(1 << 20)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&status).as_deref(), Some("password"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let login = app
        .auth()
        .login(LoginRequest {
            identifier: "admin@example.com".into(),
            password: "p".repeat(1 << 20),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(login.code(), Code::InvalidArgument, "refused by its length alone");
    assert_eq!(bad_request_field(&login).as_deref(), Some("password"));
    assert_eq!(app.app.hasher.operations(), hashes, "nothing was hashed");
    // ...whereas an ordinary attempt does hash (so the counter can move).
    let _ = register_err(&app, "admin@example.com", "other", PASSWORD).await;
    assert!(app.app.hasher.operations() > hashes);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("bob").await;
    let attempt = |identifier: &'static str, password: &'static str| {
        let mut client = app.auth();
        async move {
            client
                .login(LoginRequest {
                    identifier: identifier.into(),
                    password: password.into(),
                    device_name: None,
                })
                .await
                .unwrap_err()
        }
    };
    let unknown = attempt("nobody@example.com", PASSWORD).await;
    let wrong = attempt("bob@example.com", "wrong password!").await;
    let wrong_by_name = attempt("bob", "wrong password!").await;
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()));
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong_by_name.code(), wrong_by_name.message())
    );
}

#[tokio::test]
async fn login_by_email_or_username_then_profile() {
    let app = spawn_app().await;
    let registered = app.register("dora").await;
    let by_email = app.login("DORA@example.com", PASSWORD).await;
    let by_name = app.login("Dora", PASSWORD).await;
    assert_ne!(by_email.session_id, by_name.session_id);
    assert_eq!(by_email.token_type, "Bearer");
    assert_eq!(by_email.expires_in, 900);
    assert_eq!(by_email.refresh_expires_in, 30 * 86_400);
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &by_email.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.id, registered.id);
    assert!(me.last_login_at.is_some());
    let updated = app
        .users()
        .update_me(bearer(
            UpdateMeRequest {
                username: Some("dora2".into()),
                email: None,
                current_password: None,
            },
            &by_email.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.username, "dora2");
    app.login("dora2", PASSWORD).await;
    app.register("eve").await;
    let taken = app
        .users()
        .update_me(bearer(
            UpdateMeRequest {
                username: Some("EVE".into()),
                email: None,
                current_password: None,
            },
            &by_email.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn change_password_ends_other_sessions_and_swaps_the_password() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    app.register("fay").await;
    let here = app.login("fay", PASSWORD).await;
    let elsewhere = app.login("fay", PASSWORD).await;
    let wrong = app
        .auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: "not my password".into(),
                new_password: "a brand new password".into(),
            },
            &here.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&wrong).as_deref(), Some("current_password"));
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
            &here.access_token,
        ))
        .await
        .unwrap();
    assert!(
        app.is_active(&introspector, &here.access_token).await,
        "the current session stays"
    );
    assert!(!app.is_active(&introspector, &elsewhere.access_token).await);
    assert_eq!(app.get_me_code(&elsewhere.access_token).await, Code::Unauthenticated);
    let refresh = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: elsewhere.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let old = app
        .auth()
        .login(LoginRequest {
            identifier: "fay".into(),
            password: PASSWORD.into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    app.login("fay", "a brand new password").await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_and_rehashed_when_parameters_change() {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Hash {
        #[diesel(sql_type = Text)]
        password_hash: String,
    }
    let (_, url) = fresh_database().await;
    // First with cheap parameters, then restart with the defaults: login upgrades the hash.
    let cheap = authd::startup::Server::build(
        settings(
            &url,
            &[("AUTHD_ARGON2_MEMORY_KIB", "1024"), ("AUTHD_ARGON2_ITERATIONS", "1")],
        ),
        authd::clock::Clock::system(),
        true,
    )
    .await
    .unwrap();
    cheap
        .app()
        .accounts
        .register("gus@example.com", "gus", PASSWORD, &Default::default())
        .await
        .unwrap();
    drop(cheap);
    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&url)
        .await
        .unwrap();
    let stored = async |conn: &mut diesel_async::AsyncPgConnection| {
        let query = diesel::sql_query("SELECT password_hash FROM users WHERE username = 'gus'");
        query.get_result::<Hash>(conn).await.unwrap().password_hash
    };
    assert!(stored(&mut conn).await.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
    let full = authd::startup::Server::build(settings(&url, &[]), authd::clock::Clock::system(), true)
        .await
        .unwrap();
    full.app()
        .accounts
        .login("gus", PASSWORD, None, &Default::default())
        .await
        .unwrap_or_else(|_| panic!("login"));
    assert!(stored(&mut conn).await.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"));
}

#[tokio::test]
async fn common_passwords_are_refused_with_the_reason() {
    let app = spawn_app().await;
    let status = register_err(&app, "pat@example.com", "pat", "password123").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&status).as_deref(), Some("password"));
    assert!(status.message().contains("too weak"), "{}", status.message());
    assert!(
        !status.message().contains("password123"),
        "the password is never echoed"
    );
    // A password made of the account's own name is guessable too.
    let status = register_err(&app, "quentin.blake@example.com", "quentin.blake", "quentin.blake").await;
    assert_eq!(bad_request_field(&status).as_deref(), Some("password"));
    let tokens = app.user("pat").await;
    let change = app
        .auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "password123".into(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&change).as_deref(), Some("new_password"));
}
