//! The account-takeover and abuse holes found in review, each tried as an attacker would, over the
//! real gRPC channel. The item numbers are those of the review.

use crate::helpers::*;
use crate::smtp::{SmtpServer, app_with_smtp, link_prefix};
use authd::proto::*;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const MAIL: Duration = Duration::from_secs(10);

fn link(path: &str) -> String {
    link_prefix(path)
}

/// Follows the verification link of `mail`; the status code it gets.
async fn follow_verification(app: &TestApp, mail: &crate::smtp::Received) -> Code {
    let token = mail.token(&link("/verify-email")).expect("a verification link");
    match app.auth().verify_email(VerifyEmailRequest { token }).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn change_email(
    app: &TestApp,
    access_token: &str,
    email: &str,
    current_password: Option<&str>,
) -> Result<User, tonic::Status> {
    app.users()
        .update_me(bearer(
            UpdateMeRequest {
                username: None,
                email: Some(email.into()),
                current_password: current_password.map(str::to_string),
            },
            access_token,
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

async fn change_password(app: &TestApp, access_token: &str, current: &str, new: &str) -> Result<(), tonic::Status> {
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            },
            access_token,
        ))
        .await
        .map(drop)
}

async fn reset_by_mail(app: &TestApp, smtp: &SmtpServer, email: &str, nth: usize, new_password: &str) {
    app.auth()
        .request_password_reset(RequestPasswordResetRequest { email: email.into() })
        .await
        .unwrap();
    let mail = smtp.wait_for(email, nth, MAIL).await;
    let token = mail.token(&link("/reset-password")).expect("a reset link");
    app.auth()
        .reset_password(ResetPasswordRequest {
            token,
            new_password: new_password.into(),
        })
        .await
        .unwrap();
}

/// An authd with rate limits on, and a session of `name` signed in from `address`.
async fn limited_user(name: &str, address: &str) -> (TestApp, TokenPair) {
    let app = spawn_app_with(&behind_a_proxy()).await;
    app.register(name).await;
    let session = login_from(&app, address, name, PASSWORD).await.unwrap().tokens.unwrap();
    (app, session)
}

async fn failed_logins(app: &TestApp, username: &str) -> i64 {
    app.count(&format!(
        "SELECT failed_logins FROM users WHERE username = '{username}'"
    ))
    .await
}

// 1. An access token alone cannot move the account to another address.
#[tokio::test]
async fn changing_the_email_needs_the_password_and_tells_the_old_address() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let tokens = app.user("ada").await;
    let missing = change_email(&app, &tokens.access_token, "thief@example.com", None)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&missing).as_deref(), Some("current_password"));
    let wrong = change_email(&app, &tokens.access_token, "thief@example.com", Some("guessed wrong"))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&wrong).as_deref(), Some("current_password"));
    assert_eq!(
        failed_logins(&app, "ada").await,
        1,
        "a wrong password is a failed guess"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(smtp.to("thief@example.com").is_empty(), "no link went out");

    let user = change_email(&app, &tokens.access_token, "ada.new@example.com", Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(user.email, "ada@example.com", "unchanged until the link is followed");
    let requested = smtp.wait_for("ada@example.com", 1, MAIL).await;
    assert!(
        requested
            .decoded()
            .contains("Subject: A change of your email address was requested")
    );
    assert!(requested.decoded().contains("ada.new@example.com"));
    assert!(requested.token(&link("/")).is_none(), "a notice carries no link");
    let verification = smtp.wait_for("ada.new@example.com", 1, MAIL).await;
    assert_eq!(follow_verification(&app, &verification).await, Code::Ok);
    let changed = smtp.wait_for("ada@example.com", 2, MAIL).await;
    assert!(changed.decoded().contains("Subject: Your email address was changed"));
    app.login("ada.new@example.com", PASSWORD).await;
}

// 2. A link mailed before the owner recovered the account does not take it back.
#[tokio::test]
async fn pending_links_die_with_a_password_reset_a_lock_and_a_password_change() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let attacker_session = app.user("bea").await;
    // The attacker, holding a session and the password, asks to move the account...
    change_email(
        &app,
        &attacker_session.access_token,
        "evil1@example.com",
        Some(PASSWORD),
    )
    .await
    .unwrap();
    let held = smtp.wait_for("evil1@example.com", 1, MAIL).await;
    // ...and the owner recovers it by mail before the link is used.
    reset_by_mail(&app, &smtp, "bea@example.com", 2, "owner's new password").await;
    assert_eq!(follow_verification(&app, &held).await, Code::InvalidArgument);

    // The same after an administrator's lock, and after a password change.
    let admin = app.admin().await;
    let session = app.login("bea", "owner's new password").await;
    change_email(
        &app,
        &session.access_token,
        "evil2@example.com",
        Some("owner's new password"),
    )
    .await
    .unwrap();
    let before_lock = smtp.wait_for("evil2@example.com", 1, MAIL).await;
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &session.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    app.users()
        .lock_user(bearer(
            LockUserRequest {
                user_id: me.id.clone(),
                duration: None,
                reason: String::new(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    app.users()
        .unlock_user(bearer(
            UnlockUserRequest { user_id: me.id.clone() },
            &admin.access_token,
        ))
        .await
        .unwrap();
    assert_eq!(follow_verification(&app, &before_lock).await, Code::InvalidArgument);

    let session = app.login("bea", "owner's new password").await;
    change_email(
        &app,
        &session.access_token,
        "evil3@example.com",
        Some("owner's new password"),
    )
    .await
    .unwrap();
    let before_change = smtp.wait_for("evil3@example.com", 1, MAIL).await;
    change_password(
        &app,
        &session.access_token,
        "owner's new password",
        "another new password",
    )
    .await
    .unwrap();
    assert_eq!(follow_verification(&app, &before_change).await, Code::InvalidArgument);
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &session.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.email, "bea@example.com", "the address never moved");
}

// 3. A self-registered user cannot mint scopes that gateways believe.
#[tokio::test]
async fn plain_users_grant_no_scope_unless_configured() {
    let app = spawn_app_with(&[("AUTHD_USER_GRANTABLE_SCOPES", "")]).await;
    let user = app.user("cyd").await;
    let create = |scopes: &[&str], credential: &str| {
        let mut client = app.api_keys();
        let request = bearer(
            CreateApiKeyRequest {
                label: "k".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at: None,
            },
            credential,
        );
        async move { client.create_api_key(request).await }
    };
    let denied = create(&["tasks:write"], &user.access_token).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("tasks:write"), "{}", denied.message());
    for scope in ["billing:admin", "tokens:introspect"] {
        assert_eq!(
            create(&[scope], &user.access_token).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    // A key without scopes authenticates as its owner and holds nothing.
    let bare = create(&[], &user.access_token).await.unwrap().into_inner();
    assert!(bare.api_key.unwrap().scopes.is_empty());
    assert_eq!(app.get_me_code(&bare.secret).await, Code::Ok);
    let admin = app.admin().await;
    create(&["tasks:write"], &admin.access_token).await.unwrap();
}

// 3 (older keys). A key minted under a wider rule holds only what its owner may grant now.
#[tokio::test]
async fn a_key_loses_the_scopes_its_owner_may_no_longer_grant() {
    let (_, url) = fresh_database().await;
    let wide = authd::startup::Server::build(
        settings(&url, &[("AUTHD_USER_GRANTABLE_SCOPES", "tasks:read,tasks:write")]),
        authd::clock::Clock::system(),
        true,
    )
    .await
    .unwrap();
    let wide = spawn_on(wide).await;
    let user = wide.user("lee").await;
    let key = wide.api_key(&user.access_token, &["tasks:read", "tasks:write"]).await;
    let admin = wide.admin().await;
    let admin_key = wide.api_key(&admin.access_token, &["tasks:write"]).await;
    wide.stop().await.unwrap();
    let narrow = authd::startup::Server::build(
        settings(&url, &[("AUTHD_USER_GRANTABLE_SCOPES", "tasks:read")]),
        authd::clock::Clock::system(),
        false,
    )
    .await
    .unwrap();
    let narrow = spawn_on(narrow).await;
    let introspector = narrow.introspector().await;
    assert_eq!(narrow.introspect(&introspector, &key).await.scope, "tasks:read");
    assert_eq!(
        narrow.introspect(&introspector, &admin_key).await.scope,
        "tasks:write",
        "an admin's keys keep every scope"
    );
}

// 4. An admin's key does not carry the admin's roles to gateways.
#[tokio::test]
async fn an_api_key_introspects_with_its_scopes_and_no_roles() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let introspector = app.api_key(&admin.access_token, &["tokens:introspect"]).await;
    let key = app.api_key(&admin.access_token, &["tasks:read"]).await;
    let seen = app.introspect(&introspector, &key).await;
    assert!(seen.active);
    assert_eq!(seen.token_type, "api_key");
    assert_eq!(seen.scope, "tasks:read");
    assert!(seen.roles.is_empty(), "{:?}", seen.roles);
    // The admin's own access token still shows the roles.
    let token = app.introspect(&introspector, &admin.access_token).await;
    assert!(token.roles.contains(&"admin".to_string()));
}

// 5. A stolen session cannot brute-force the password through ChangePassword.
#[tokio::test]
async fn wrong_change_password_guesses_lock_the_account() {
    let app = spawn_app().await;
    let session = app.user("dov").await;
    for _ in 0..8 {
        let refused = change_password(&app, &session.access_token, "a wrong guess", "new password 1")
            .await
            .unwrap_err();
        assert_ne!(refused.code(), Code::Ok);
    }
    let refused = change_password(&app, &session.access_token, PASSWORD, "new password 1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let login = app
        .auth()
        .login(LoginRequest {
            identifier: "dov".into(),
            password: PASSWORD.into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(login.code(), Code::Unauthenticated, "the lockout covers login too");
    // A lockout, which anyone who knows the username can cause, leaves the owner's session
    // working for what needs no password.
    let key = app.api_key(&session.access_token, &["tasks:read"]).await;
    assert_eq!(app.get_me_code(&key).await, Code::Ok);
}

// 5 (limit). Password checks are also limited per account.
#[tokio::test]
async fn password_checks_are_limited_per_account() {
    let (app, session) = limited_user("eda", "198.51.100.20").await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let request = bearer(
            ChangePasswordRequest {
                current_password: "a wrong guess".into(),
                new_password: "new password 1".into(),
            },
            &session.access_token,
        );
        codes.push(app.auth().change_password(request).await.unwrap_err().code());
    }
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
}

// 6. Junk reset tokens cost no password hash.
#[tokio::test]
async fn reset_password_checks_the_token_before_hashing() {
    let app = spawn_app().await;
    app.register("fay").await;
    let before = app.app.hasher.operations();
    for i in 0..20 {
        let refused = app
            .auth()
            .reset_password(ResetPasswordRequest {
                token: format!("junk-token-{i}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                new_password: "a perfectly fine new password".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad_request_field(&refused).as_deref(), Some("token"));
    }
    assert_eq!(app.app.hasher.operations(), before, "a junk token was hashed for");
}

#[tokio::test]
async fn one_time_token_rpcs_are_limited_per_address() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    let mut codes = Vec::new();
    for _ in 0..11 {
        let request = from_address(
            ResetPasswordRequest {
                token: "junk".into(),
                new_password: "a perfectly fine new password".into(),
            },
            "198.51.100.30",
        );
        codes.push(app.auth().reset_password(request).await.unwrap_err().code());
    }
    assert_eq!(codes[..10], [Code::InvalidArgument; 10]);
    assert_eq!(codes[10], Code::ResourceExhausted);
}

// 7. Oversized input is refused before a rate-limit key, a hash or a query.
#[tokio::test]
async fn oversized_fields_are_refused_before_any_work() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    app.register("gil").await;
    let huge = "a".repeat(100_000);
    let hashes = app.app.hasher.operations();
    for _ in 0..30 {
        let refused = login_from(&app, "198.51.100.40", &huge, PASSWORD).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(bad_request_field(&refused).as_deref(), Some("identifier"));
        assert!(refused.message().len() < 80, "a short message: {}", refused.message());
    }
    assert_eq!(app.app.hasher.operations(), hashes);
    // Not one of them counted against the address's 20 logins a minute.
    login_from(&app, "198.51.100.40", "gil", PASSWORD).await.unwrap();
    let register = app
        .auth()
        .register(from_address(
            RegisterRequest {
                email: format!("{huge}@example.com"),
                username: "big".into(),
                password: PASSWORD.into(),
            },
            "198.51.100.41",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&register).as_deref(), Some("email"));
    let reset = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token: huge.clone(),
            new_password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&reset).as_deref(), Some("token"));
    // A credential that may be left out is looked at only after the bounds.
    let logout = app
        .auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: huge.clone(),
            },
            "not-a-credential",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&logout).as_deref(), Some("refresh_token"));
    // An oversized bearer is no credential.
    assert_eq!(app.get_me_code(&"x".repeat(10_000)).await, Code::Unauthenticated);
}

// 8. Revoking one token again and again is one revocation.
#[tokio::test]
async fn revoking_a_token_again_writes_and_streams_nothing() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let victim = app.user("hob").await;
    let marker = app.login("hob", PASSWORD).await;
    let mut events = app
        .tokens()
        .watch_revocations(bearer(WatchRevocationsRequest::default(), &introspector))
        .await
        .unwrap()
        .into_inner();
    // The victim's own token revokes itself once; later calls carry no credential that works,
    // so the repeats are sent with the marker session's token.
    for i in 0..60 {
        let mut client = app.tokens();
        let caller = if i == 0 {
            &victim.access_token
        } else {
            &marker.access_token
        };
        client
            .revoke(bearer(
                RevokeRequest {
                    token: victim.access_token.clone(),
                    token_type_hint: String::new(),
                },
                caller,
            ))
            .await
            .unwrap();
    }
    // Then something else, so the stream shows where the 60 calls end.
    app.auth()
        .logout(bearer(LogoutRequest::default(), &marker.access_token))
        .await
        .unwrap();
    let mut token_events = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the marker arrives")
            .unwrap()
            .unwrap();
        match message.event {
            Some(watch_revocations_response::Event::Revocation(event)) if event.kind() == RevocationKind::Token => {
                token_events += 1;
            }
            Some(watch_revocations_response::Event::Revocation(event)) if event.kind() == RevocationKind::Session => {
                break;
            }
            _ => {}
        }
    }
    assert_eq!(token_events, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM revocations WHERE kind = 'token'").await,
        1
    );
}

#[tokio::test]
async fn revoke_is_limited_per_caller() {
    let (app, session) = limited_user("ida", "198.51.100.50").await;
    // 120 a minute with a burst of 120: one more call is allowed for every half second the
    // calls take, so count the calls allowed before the first refusal instead of expecting it
    // at call 121 (a slow machine spends more than half a second on 121 calls).
    let started = std::time::Instant::now();
    let mut allowed = 0u32;
    let refused = loop {
        let request = bearer(
            RevokeRequest {
                token: "not a token".into(),
                token_type_hint: String::new(),
            },
            &session.access_token,
        );
        match app.tokens().revoke(request).await {
            Ok(_) => allowed += 1,
            Err(status) => break status,
        }
        assert!(allowed <= 1000, "no refusal after {allowed} calls");
    };
    let elapsed = started.elapsed();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let refill = u32::try_from(elapsed.as_millis() / 500).unwrap_or(u32::MAX);
    assert!(
        (120..=121 + refill).contains(&allowed),
        "{allowed} calls allowed in {elapsed:?}"
    );
}

// 9. With Redis black-holed, rate-limited calls do not queue behind one another.
#[tokio::test]
async fn a_black_holed_redis_does_not_serialise_limited_calls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redis_url = format!("redis://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut overrides = behind_a_proxy();
    overrides.push(("AUTHD_REDIS_URL", &redis_url));
    let app = spawn_app_with(&overrides).await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = app.auth();
            tokio::spawn(async move {
                let request = from_address(
                    RequestPasswordResetRequest {
                        email: "nobody@example.com".into(),
                    },
                    &format!("198.51.100.{}", 100 + i),
                );
                client.request_password_reset(request).await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("answered by the in-process limiter");
    }
    // One after another, each waiting on Redis, they took 20 s and more.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "limited calls waited on Redis: {:?}",
        started.elapsed()
    );
    hold.abort();
}

// 10. A flood over a limit is one audit row per subject and minute, not one per call.
#[tokio::test]
async fn refusals_are_summarised_in_the_audit_trail() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    let mut refused = 0;
    for n in 0..30 {
        let request = from_address(
            RegisterRequest {
                email: format!("flood{n}@example.com"),
                username: format!("flood{n}"),
                password: PASSWORD.into(),
            },
            "198.51.100.60",
        );
        if let Err(status) = app.auth().register(request).await {
            assert_eq!(status.code(), Code::ResourceExhausted);
            refused += 1;
        }
    }
    assert_eq!(refused, 27);
    let hits = "SELECT count(*) FROM audit_events WHERE type = 'rate_limit.hit'";
    assert_eq!(app.count(hits).await, 0, "no row per refused call");
    app.app.audit_log.flush_refusals().await;
    assert_eq!(app.count(hits).await, 1);
    assert_eq!(
        app.count("SELECT (details::jsonb ->> 'refused')::bigint FROM audit_events WHERE type = 'rate_limit.hit'")
            .await,
        27
    );
}

// 11. What someone typed as an unknown identifier is not kept.
#[tokio::test]
async fn unknown_identifiers_are_recorded_only_as_a_keyed_digest() {
    let app = spawn_app().await;
    let typed = "MySecretPassw0rd!";
    for _ in 0..2 {
        let refused = app
            .auth()
            .login(LoginRequest {
                identifier: typed.into(),
                password: "whatever it is".into(),
                device_name: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let all = "SELECT count(*) FROM audit_events WHERE type = 'login.failed'";
    assert_eq!(app.count(all).await, 2);
    let leaking = format!(
        "SELECT count(*) FROM audit_events WHERE lower(details) LIKE '%{}%'",
        typed.to_lowercase()
    );
    assert_eq!(
        app.count(&leaking).await,
        0,
        "the typed identifier is in the audit trail"
    );
    let digests = "SELECT count(DISTINCT details::jsonb ->> 'identifier_digest') FROM audit_events \
                   WHERE type = 'login.failed' AND details::jsonb ? 'identifier_digest'";
    assert_eq!(app.count(digests).await, 1, "one identifier, one digest, on both rows");
}

// 12. A user-wide revocation ends; the keys it covered are revoked in their own rows.
#[tokio::test]
async fn user_wide_revocations_have_an_end() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let user = app.register("joe").await;
    let session = app.login("joe", PASSWORD).await;
    let key = app.api_key(&session.access_token, &["tasks:read"]).await;
    app.app.revoker.revoke_user(user.id.parse().unwrap()).await.unwrap();
    assert!(!app.is_active(&introspector, &key).await);
    assert!(!app.is_active(&introspector, &session.access_token).await);
    let longest = "SELECT coalesce(max(extract(epoch FROM expires_at - created_at)), 0)::bigint \
                   FROM revocations WHERE kind = 'user'";
    let lifetime = app.count(longest).await;
    assert!(lifetime > 0 && lifetime <= 3600, "a user-wide entry lives {lifetime} s");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND label = 'test' AND scopes = '{tasks:read}'"
        )
        .await,
        0,
        "the key's own row records its end"
    );
    // A key made afterwards works.
    let later = app.login("joe", PASSWORD).await;
    let fresh = app.api_key(&later.access_token, &["tasks:read"]).await;
    assert!(app.is_active(&introspector, &fresh).await);
}

// 13. The bootstrap administrator's password follows the policy.
#[tokio::test]
async fn a_weak_or_placeholder_bootstrap_password_stops_start_up() {
    for (password, says) in [("password1", "too weak"), ("REPLACE_ME_ADMIN_PASSWORD", "placeholder")] {
        let (_, url) = fresh_database().await;
        let refused = authd::startup::Server::build(
            settings(&url, &[("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", password)]),
            authd::clock::Clock::system(),
            true,
        )
        .await
        .err()
        .expect("start-up refused");
        let message = format!("{refused:#}");
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(password), "the password is echoed: {message}");
    }
    // An administrator that exists already is left alone: an upgraded deployment still starts.
    let (_, url) = fresh_database().await;
    for password in [ADMIN_PASSWORD, "password1"] {
        authd::startup::Server::build(
            settings(&url, &[("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", password)]),
            authd::clock::Clock::system(),
            true,
        )
        .await
        .expect("start-up with an existing administrator");
    }
}

// 15. After UnlockUser, or a reset, the right password logs in at once.
#[tokio::test]
async fn an_unlocked_or_reset_account_logs_in_at_once() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &behind_a_proxy()).await;
    let kai = app.register("kai").await;
    // Five wrong guesses lock the account and fill the per-account limit of that identifier.
    let lock_out = async |address: &str, identifier: &str| {
        for _ in 0..5 {
            let refused = login_from(&app, address, identifier, "a wrong guess")
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated);
        }
        let refused = login_from(&app, address, identifier, PASSWORD).await.unwrap_err();
        assert_ne!(refused.code(), Code::Ok, "locked out");
    };
    lock_out("198.51.100.70", "kai").await;
    let admin = login_from(&app, "198.51.100.71", ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.users()
        .unlock_user(bearer(
            UnlockUserRequest {
                user_id: kai.id.clone(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    login_from(&app, "198.51.100.70", "kai", PASSWORD)
        .await
        .expect("the owner logs in right after the unlock");

    lock_out("198.51.100.72", "kai@example.com").await;
    app.auth()
        .request_password_reset(from_address(
            RequestPasswordResetRequest {
                email: "kai@example.com".into(),
            },
            "198.51.100.73",
        ))
        .await
        .unwrap();
    let mail = smtp.wait_for("kai@example.com", 1, MAIL).await;
    app.auth()
        .reset_password(from_address(
            ResetPasswordRequest {
                token: mail.token(&link("/reset-password")).unwrap(),
                new_password: "kai's new password".into(),
            },
            "198.51.100.73",
        ))
        .await
        .unwrap();
    login_from(&app, "198.51.100.72", "kai@example.com", "kai's new password")
        .await
        .expect("the owner logs in right after the reset");
}
