//! The account lifecycle by mail, over real SMTP, following the links in the mails.

use crate::helpers::*;
use crate::smtp::{PUBLIC_URL, SilentSmtp, SmtpServer, app_with_smtp, link_prefix};
use authd::proto::*;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn verification_mail_link_verifies_once() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let tokens = app.user("amy").await;
    app.auth()
        .send_verification_email(SendVerificationEmailRequest {
            email: "AMY@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("amy@example.com", 1, Duration::from_secs(10)).await;
    let token = mail
        .token(&link_prefix("/verify-email"))
        .expect("a link under AUTHD_PUBLIC_URL");
    assert!(token.len() >= 43, "256 bits");
    assert!(mail.decoded().contains("Subject: Confirm your email address"));
    app.auth()
        .verify_email(VerifyEmailRequest { token: token.clone() })
        .await
        .unwrap();
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(me.user.unwrap().email_verified);
    let again = app.auth().verify_email(VerifyEmailRequest { token }).await.unwrap_err();
    assert_eq!(again.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&again).as_deref(), Some("token"));
}

#[tokio::test]
async fn password_reset_by_mail_ends_every_session() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let introspector = app.introspector().await;
    app.register("ben").await;
    let before = app.login("ben", PASSWORD).await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "Ben@Example.COM".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("ben@example.com", 1, Duration::from_secs(10)).await;
    let token = mail.token(&link_prefix("/reset-password")).unwrap();
    let weak = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token: token.clone(),
            new_password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_request_field(&weak).as_deref(),
        Some("new_password"),
        "refused before the token is spent"
    );
    let common = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token: token.clone(),
            new_password: "password123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&common).as_deref(), Some("new_password"));
    app.auth()
        .reset_password(ResetPasswordRequest {
            token: token.clone(),
            new_password: "a fresh new password".into(),
        })
        .await
        .unwrap();
    let old = app
        .auth()
        .login(LoginRequest {
            identifier: "ben".into(),
            password: PASSWORD.into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let fresh = app.login("ben", "a fresh new password").await;
    assert!(
        app.is_active(&introspector, &fresh.access_token).await,
        "a login right after the reset works"
    );
    assert!(!app.is_active(&introspector, &before.access_token).await);
    let refresh = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: before.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let twice = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token,
            new_password: "yet another password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_newer_reset_request_supersedes_the_older_link() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    app.register("cat").await;
    for n in 1..=2 {
        app.auth()
            .request_password_reset(RequestPasswordResetRequest {
                email: "cat@example.com".into(),
            })
            .await
            .unwrap();
        smtp.wait_for("cat@example.com", n, Duration::from_secs(10)).await;
    }
    let mails = smtp.to("cat@example.com");
    let (first, second) = (
        mails[0].token(&link_prefix("/reset-password")).unwrap(),
        mails[1].token(&link_prefix("/reset-password")).unwrap(),
    );
    let stale = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token: first,
            new_password: "another new password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::InvalidArgument);
    app.auth()
        .reset_password(ResetPasswordRequest {
            token: second,
            new_password: "another new password".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_addresses_get_the_same_answer_and_no_mail() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    app.register("dee").await;
    for (known, unknown) in [("dee@example.com", "nobody@example.com")] {
        let reset_known = app
            .auth()
            .request_password_reset(RequestPasswordResetRequest { email: known.into() })
            .await;
        let reset_unknown = app
            .auth()
            .request_password_reset(RequestPasswordResetRequest { email: unknown.into() })
            .await;
        assert_eq!(reset_known.unwrap().into_inner(), reset_unknown.unwrap().into_inner());
        let verify_known = app
            .auth()
            .send_verification_email(SendVerificationEmailRequest { email: known.into() })
            .await;
        let verify_unknown = app
            .auth()
            .send_verification_email(SendVerificationEmailRequest { email: unknown.into() })
            .await;
        assert_eq!(verify_known.unwrap().into_inner(), verify_unknown.unwrap().into_inner());
        let delete_known = app
            .auth()
            .request_account_deletion(RequestAccountDeletionRequest { email: known.into() })
            .await;
        let delete_unknown = app
            .auth()
            .request_account_deletion(RequestAccountDeletionRequest { email: unknown.into() })
            .await;
        assert_eq!(delete_known.unwrap().into_inner(), delete_unknown.unwrap().into_inner());
    }
    // The known address gets its three mails; by then the unknown one would have had its own.
    smtp.wait_for("dee@example.com", 3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(smtp.to("nobody@example.com").is_empty());
    // Nothing was stored for it either: no token, no mail in the outbox.
    {
        use diesel::sql_types::BigInt;
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut db = app.db().await;
        let stored: Count = diesel::sql_query(
            "SELECT (SELECT COUNT(*) FROM mail_outbox WHERE recipient = 'nobody@example.com') \
                  + (SELECT COUNT(*) FROM one_time_tokens WHERE email = 'nobody@example.com') \
                  + (SELECT COUNT(*) FROM mail_requests) AS n",
        )
        .get_result(&mut db)
        .await
        .unwrap();
        assert_eq!(stored.n, 0);
        let known: Count =
            diesel::sql_query("SELECT COUNT(*) AS n FROM mail_outbox WHERE recipient = 'dee@example.com'")
                .get_result(&mut db)
                .await
                .unwrap();
        assert_eq!(known.n, 3, "the check above can fail");
    }
    // A malformed address is refused the same way whether or not anyone has it.
    let bad = app
        .auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "not-an-email".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&bad).as_deref(), Some("email"));
}

#[tokio::test]
async fn a_request_left_by_a_replica_that_stopped_is_mailed_by_another() {
    use diesel_async::RunQueryDsl;
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    app.register("hal").await;
    // As a replica killed after answering would leave them: recorded, never handled; first one
    // of a kind this version does not know (left for a replica that does), then 30 for
    // addresses of no account (more than one batch), then hal's.
    let mut db = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut db,
        "INSERT INTO mail_requests (kind, email, requested_at) \
         VALUES ('from_a_newer_version', 'hal@example.com', now() - interval '1 minute'); \
         INSERT INTO mail_requests (kind, email, requested_at) \
         SELECT 'reset_password', 'nobody' || n || '@example.com', now() - interval '1 minute' \
         FROM generate_series(1, 30) n; \
         INSERT INTO mail_requests (kind, email, requested_at) \
         VALUES ('reset_password', 'Hal@example.com', now() - interval '1 minute')",
    )
    .await
    .unwrap();
    let mail = smtp.wait_for("hal@example.com", 1, Duration::from_secs(15)).await;
    let token = mail.token(&link_prefix("/reset-password")).unwrap();
    app.auth()
        .reset_password(ResetPasswordRequest {
            token,
            new_password: "a password of hal's own".into(),
        })
        .await
        .unwrap();
    // Each taken once: no second mail, and nothing left to take but the newer version's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.to("hal@example.com").len(), 1);
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let left: Count = diesel::sql_query("SELECT COUNT(*) AS n FROM mail_requests")
        .get_result(&mut db)
        .await
        .unwrap();
    assert_eq!(left.n, 1);
}

#[tokio::test]
async fn a_mail_a_replica_stopped_while_sending_goes_out_from_another_within_a_minute() {
    // Replica A's mail server never answers, so A is in the middle of sending when it stops, and
    // its claim on the mail stays behind as a killed replica's would.
    let silent = SilentSmtp::start().await;
    let silent_url = silent.url();
    let a = spawn_app_with(&[
        ("AUTHD_SMTP_URL", silent_url.as_str()),
        ("AUTHD_PUBLIC_URL", PUBLIC_URL),
        ("AUTHD_MAIL_POLL_INTERVAL", "1s"),
    ])
    .await;
    a.register("ida").await;
    a.register("joe").await;
    let reset = |email: &str| {
        let request = RequestPasswordResetRequest { email: email.into() };
        let mut auth = a.auth();
        async move { auth.request_password_reset(request).await.unwrap() }
    };
    reset("ida@example.com").await;
    silent.wait_for_a_sender(Duration::from_secs(15)).await;
    // Written while A is busy with ida's: A holds no claim on joe's.
    reset("joe@example.com").await;
    let database_url = a.database_url.clone();
    a.stop().await.unwrap();

    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let b = authd::startup::Server::build(
        settings(
            &database_url,
            &[
                ("AUTHD_SMTP_URL", smtp_url.as_str()),
                ("AUTHD_PUBLIC_URL", PUBLIC_URL),
                ("AUTHD_MAIL_POLL_INTERVAL", "1s"),
            ],
        ),
        authd::clock::Clock::system(),
        true,
    )
    .await
    .unwrap();
    let b = spawn_on(b).await;
    // B sends joe's at once, and leaves ida's while A's claim may still be sending it...
    smtp.wait_for("joe@example.com", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        smtp.to("ida@example.com").is_empty(),
        "sent while another replica held it"
    );
    // ...and sends it once the claim has run out, under a minute after A took it.
    b.clock.advance(Duration::from_secs(50));
    let mail = smtp.wait_for("ida@example.com", 1, Duration::from_secs(15)).await;
    assert!(mail.token(&link_prefix("/reset-password")).is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.to("ida@example.com").len(), 1);
    assert_eq!(smtp.to("joe@example.com").len(), 1);
}

#[tokio::test]
async fn the_writes_of_a_claim_that_ran_out_land_nowhere() {
    use authd::store::mail;
    use diesel_async::RunQueryDsl;
    let (_, url) = fresh_database().await;
    let pool = authd::store::connect(&url, 1).await.unwrap();
    let mut conn = authd::store::conn(&pool).await.unwrap();
    diesel::sql_query(
        "INSERT INTO mail_outbox (kind, recipient, sealed_message, created_at, next_attempt_at) \
         VALUES ('reset_password', 'kim@example.com', '\\x00', now(), now())",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let (now, lease) = (chrono::Utc::now(), chrono::Duration::seconds(45));
    let first = mail::claim_next(&mut conn, now, lease).await.unwrap().expect("due");
    assert!(mail::claim_next(&mut conn, now, lease).await.unwrap().is_none(), "held");
    let later = now + chrono::Duration::seconds(46);
    let second = mail::claim_next(&mut conn, later, lease)
        .await
        .unwrap()
        .expect("the claim ran out");
    assert_eq!(second.id, first.id);
    // The first claimer, late, writes nothing over the second's claim...
    assert!(!mail::mark_sent(&mut conn, &first, later).await.unwrap());
    assert!(!mail::mark_retry(&mut conn, &first, "late", later).await.unwrap());
    assert!(!mail::mark_abandoned(&mut conn, &first, "late", later).await.unwrap());
    assert!(
        mail::claim_next(&mut conn, later, lease).await.unwrap().is_none(),
        "still held"
    );
    // ...and the second's outcome is written, once.
    assert!(mail::mark_sent(&mut conn, &second, later).await.unwrap());
    assert!(!mail::mark_retry(&mut conn, &second, "late", later).await.unwrap());
    let much_later = later + chrono::Duration::hours(1);
    assert!(
        mail::claim_next(&mut conn, much_later, lease).await.unwrap().is_none(),
        "sent"
    );
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sent_once: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM mail_outbox WHERE sent_at IS NOT NULL AND attempts = 0 \
         AND failed_at IS NULL AND last_error IS NULL AND sealed_message IS NULL",
    )
    .get_result(&mut *conn)
    .await
    .unwrap();
    assert_eq!(sent_once.n, 1);
}

#[tokio::test]
async fn mail_waits_for_the_smtp_server_to_come_back() {
    let smtp = SmtpServer::down().await;
    let app = app_with_smtp(&smtp, &[]).await;
    app.register("eva").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "eva@example.com".into(),
        })
        .await
        .unwrap();
    // Several delivery attempts fail while nothing listens.
    tokio::time::sleep(Duration::from_secs(4)).await;
    smtp.resume();
    let mail = smtp.wait_for("eva@example.com", 1, Duration::from_secs(90)).await;
    assert!(mail.token(&link_prefix("/reset-password")).is_some());
    // Delivered once, not once per attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.to("eva@example.com").len(), 1);
}

#[tokio::test]
async fn at_most_a_few_mails_per_address_and_kind_per_hour() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[("AUTHD_MAIL_RATE_PER_HOUR", "3")]).await;
    app.register("fin").await;
    for _ in 0..6 {
        app.auth()
            .request_password_reset(RequestPasswordResetRequest {
                email: "fin@example.com".into(),
            })
            .await
            .expect("excess requests still answer OK");
    }
    smtp.wait_for("fin@example.com", 3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.to("fin@example.com").len(), 3);
}

#[tokio::test]
async fn deletion_with_a_grace_period_purges_the_account_and_frees_the_address() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(
        &smtp,
        &[
            ("AUTHD_ACCOUNT_DELETION_GRACE", "3s"),
            ("AUTHD_HOUSEKEEPING_INTERVAL", "1s"),
        ],
    )
    .await;
    let introspector = app.introspector().await;
    let tokens = app.user("gus").await;
    let status = |token: String| {
        let mut client = app.auth();
        async move {
            client
                .get_account_deletion_status(bearer(GetAccountDeletionStatusRequest {}, &token))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        status(tokens.access_token.clone()).await.state(),
        AccountDeletionState::None
    );
    app.auth()
        .request_account_deletion(RequestAccountDeletionRequest {
            email: "gus@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("gus@example.com", 1, Duration::from_secs(10)).await;
    assert_eq!(
        status(tokens.access_token.clone()).await.state(),
        AccountDeletionState::Requested
    );
    let token = mail.token(&link_prefix("/confirm-deletion")).unwrap();
    let confirmed = app
        .auth()
        .confirm_account_deletion(ConfirmAccountDeletionRequest { token })
        .await
        .unwrap()
        .into_inner();
    let scheduled = confirmed.scheduled_for.expect("scheduled_for");
    let ahead = scheduled.seconds - app.clock.now().timestamp();
    assert!((2..=4).contains(&ahead), "scheduled {ahead}s ahead");
    assert!(
        !app.is_active(&introspector, &tokens.access_token).await,
        "sessions end at confirmation"
    );
    // Signing in during the grace is allowed (to cancel); what it hands out dies with the account.
    let during_grace = app.login("gus", PASSWORD).await;
    assert!(app.is_active(&introspector, &during_grace.access_token).await);
    // Gone within a minute; the address can register again.
    crate::cluster::within(Duration::from_secs(60), || async {
        app.auth()
            .login(LoginRequest {
                identifier: "gus".into(),
                password: PASSWORD.into(),
                device_name: None,
            })
            .await
            .is_err()
    })
    .await;
    app.auth()
        .register(RegisterRequest {
            email: "gus@example.com".into(),
            username: "gus".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("the address is free again");
    assert!(
        !app.is_active(&introspector, &during_grace.access_token).await,
        "purged with the account"
    );
}

#[tokio::test]
async fn a_cancelled_deletion_leaves_the_account_working() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(
        &smtp,
        &[
            ("AUTHD_ACCOUNT_DELETION_GRACE", "5s"),
            ("AUTHD_HOUSEKEEPING_INTERVAL", "1s"),
            ("AUTHD_MAIL_RATE_PER_HOUR", "10"),
        ],
    )
    .await;
    app.register("hal").await;
    // A superseded request's token can neither confirm nor cancel.
    for n in 1..=2 {
        app.auth()
            .request_account_deletion(RequestAccountDeletionRequest {
                email: "hal@example.com".into(),
            })
            .await
            .unwrap();
        smtp.wait_for("hal@example.com", n, Duration::from_secs(10)).await;
    }
    let stale = smtp.to("hal@example.com")[0]
        .token(&link_prefix("/confirm-deletion"))
        .unwrap();
    let err = app
        .auth()
        .confirm_account_deletion(ConfirmAccountDeletionRequest { token: stale.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app
        .auth()
        .cancel_account_deletion(CancelAccountDeletionRequest { token: stale })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    app.auth()
        .request_account_deletion(RequestAccountDeletionRequest {
            email: "hal@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("hal@example.com", 3, Duration::from_secs(10)).await;
    let token = mail.token(&link_prefix("/confirm-deletion")).unwrap();
    app.auth()
        .confirm_account_deletion(ConfirmAccountDeletionRequest { token: token.clone() })
        .await
        .unwrap();
    app.auth()
        .cancel_account_deletion(CancelAccountDeletionRequest { token: token.clone() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tokens = app.login("hal", PASSWORD).await;
    let status = app
        .auth()
        .get_account_deletion_status(bearer(GetAccountDeletionStatusRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), AccountDeletionState::None);
    // The token cannot cancel (or confirm) anything any more.
    let reuse = app
        .auth()
        .confirm_account_deletion(ConfirmAccountDeletionRequest { token })
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::InvalidArgument);
    // Cancelling with the bearer works as well.
    app.auth()
        .request_account_deletion(RequestAccountDeletionRequest {
            email: "hal@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("hal@example.com", 4, Duration::from_secs(10)).await;
    app.auth()
        .confirm_account_deletion(ConfirmAccountDeletionRequest {
            token: mail.token(&link_prefix("/confirm-deletion")).unwrap(),
        })
        .await
        .unwrap();
    let tokens = app.login("hal", PASSWORD).await;
    app.auth()
        .cancel_account_deletion(bearer(CancelAccountDeletionRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    app.login("hal", PASSWORD).await;
}

#[tokio::test]
async fn login_needs_a_verified_address_when_configured() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[("AUTHD_REQUIRE_VERIFIED_EMAIL", "true")]).await;
    app.register("ivy").await;
    let refused = app
        .auth()
        .login(LoginRequest {
            identifier: "ivy".into(),
            password: PASSWORD.into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // Wrong passwords still get the generic answer.
    let wrong = app
        .auth()
        .login(LoginRequest {
            identifier: "ivy".into(),
            password: "not the password".into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    app.auth()
        .send_verification_email(SendVerificationEmailRequest {
            email: "ivy@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("ivy@example.com", 1, Duration::from_secs(10)).await;
    app.auth()
        .verify_email(VerifyEmailRequest {
            token: mail.token(&link_prefix("/verify-email")).unwrap(),
        })
        .await
        .unwrap();
    app.login("ivy", PASSWORD).await;
}

#[tokio::test]
async fn changing_the_address_takes_effect_once_verified() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let tokens = app.user("jan").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "jan@example.com".into(),
        })
        .await
        .unwrap();
    let old_link = smtp.wait_for("jan@example.com", 1, Duration::from_secs(10)).await;
    let old_reset = old_link.token(&link_prefix("/reset-password")).unwrap();
    let updated = app
        .users()
        .update_me(bearer(
            UpdateMeRequest {
                username: None,
                email: Some("jan.new@example.com".into()),
                current_password: Some(PASSWORD.into()),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.email, "jan@example.com", "unchanged until verified");
    let mail = smtp.wait_for("jan.new@example.com", 1, Duration::from_secs(10)).await;
    app.auth()
        .verify_email(VerifyEmailRequest {
            token: mail.token(&link_prefix("/verify-email")).unwrap(),
        })
        .await
        .unwrap();
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.email, "jan.new@example.com");
    assert!(me.email_verified);
    app.login("jan.new@example.com", PASSWORD).await;
    // Another account's address: the same answer (nothing revealed), and no mail goes there.
    app.register("kim").await;
    app.users()
        .update_me(bearer(
            UpdateMeRequest {
                username: None,
                email: Some("KIM@example.com".into()),
                current_password: Some(PASSWORD.into()),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(smtp.to("kim@example.com").is_empty());
    // The reset link mailed to the old address died when the address moved.
    let dead = app
        .auth()
        .reset_password(ResetPasswordRequest {
            token: old_reset,
            new_password: "a different new password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dead.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn without_smtp_mail_is_written_as_eml_files() {
    let dir = std::env::temp_dir().join(format!("authd-mail-{}", uuid::Uuid::new_v4().simple()));
    let dir_text = dir.display().to_string();
    let app = spawn_app_with(&[("AUTHD_MAIL_DIR", &dir_text), ("AUTHD_PUBLIC_URL", PUBLIC_URL)]).await;
    app.register("lou").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "lou@example.com".into(),
        })
        .await
        .unwrap();
    let file = crate::cluster::within(Duration::from_secs(10), || async {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
            .unwrap_or(false)
    })
    .await;
    let _ = file;
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(Result::unwrap)
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .expect("a finished .eml file");
    assert!(entry.file_name().to_string_lossy().ends_with("-reset_password.eml"));
    let data = std::fs::read_to_string(entry.path()).unwrap();
    let mail = crate::smtp::Received { to: vec![], data };
    assert!(mail.token(&link_prefix("/reset-password")).is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
