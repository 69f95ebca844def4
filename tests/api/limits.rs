//! Rate limits, through a trusted proxy that names the client address in `x-forwarded-for`.

use crate::helpers::*;
use authd::proto::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn failed_logins_from_one_address_at_many_accounts_are_limited() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    app.register("ann").await;
    let mut limited = None;
    for i in 0..40 {
        match login_from(&app, "198.51.100.1", &format!("someone{i}"), "wrong password!").await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                limited = Some((i, status));
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
            Ok(_) => panic!("a login with a wrong password succeeded"),
        }
    }
    let (at, status) = limited.expect("40 rapid failures from one address meet the limit");
    assert_eq!(at, 20, "20 per minute per address");
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    assert!(retry.retry_delay.is_some_and(|d| d > std::time::Duration::ZERO));
    // Another address is not affected.
    login_from(&app, "198.51.100.2", "ann", PASSWORD)
        .await
        .expect("a login from elsewhere works");
}

#[tokio::test]
async fn failed_logins_from_many_addresses_at_one_account_are_limited() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    app.register("bob").await;
    let codes: Vec<Code> = {
        let mut codes = Vec::new();
        for i in 0..8 {
            codes.push(
                login_from(&app, &format!("203.0.113.{i}"), "bob", "wrong password!")
                    .await
                    .unwrap_err()
                    .code(),
            );
        }
        codes
    };
    assert_eq!(&codes[..5], &[Code::Unauthenticated; 5]);
    assert!(codes[5..].iter().all(|c| *c == Code::ResourceExhausted), "{codes:?}");
    // The limit holds whatever the letter case of the identifier.
    let status = login_from(&app, "203.0.113.99", "BOB", "wrong password!")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(&[("AUTHD_RATE_LIMITS", "true")]).await;
    let mut limited = false;
    for i in 0..25 {
        // A client that invents a new address each time is still one address: its own.
        let status = login_from(&app, &format!("192.0.2.{i}"), &format!("ghost{i}"), "wrong password!")
            .await
            .unwrap_err();
        if status.code() == Code::ResourceExhausted {
            limited = true;
            break;
        }
    }
    assert!(limited);
}

#[tokio::test]
async fn registrations_and_mail_requests_are_limited_per_address() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    let register = |n: u32| {
        let mut client = app.auth();
        async move {
            let mut request = tonic::Request::new(RegisterRequest {
                email: format!("new{n}@example.com"),
                username: format!("new{n}"),
                password: PASSWORD.into(),
            });
            request
                .metadata_mut()
                .insert("x-forwarded-for", "198.51.100.50".parse().unwrap());
            client.register(request).await
        }
    };
    for n in 0..3 {
        register(n).await.unwrap();
    }
    assert_eq!(register(3).await.unwrap_err().code(), Code::ResourceExhausted);
    for _ in 0..3 {
        let mut request = tonic::Request::new(RequestPasswordResetRequest {
            email: "x@example.com".into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", "198.51.100.60".parse().unwrap());
        app.auth().request_password_reset(request).await.unwrap();
    }
    let mut request = tonic::Request::new(RequestPasswordResetRequest {
        email: "x@example.com".into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", "198.51.100.60".parse().unwrap());
    assert_eq!(
        app.auth().request_password_reset(request).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // The hit is in the audit trail, once the minute's refusals are summarised.
    app.app.audit_log.flush_refusals().await;
    let admin = login_from(&app, "198.51.100.70", ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let hits = app
        .audit_events()
        .list_audit_events(bearer(
            ListAuditEventsRequest {
                r#type: "rate_limit.hit".into(),
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(hits.iter().any(|e| e.ip_address == "198.51.100.50"));
}

#[tokio::test]
async fn limits_are_shared_by_replicas_through_redis() {
    let redis = std::env::var("AUTHD_TEST_REDIS_URL").unwrap();
    let namespace = format!("authd-test-{}", uuid::Uuid::new_v4().simple());
    let mut overrides = behind_a_proxy();
    overrides.push(("AUTHD_REDIS_URL", redis.as_str()));
    overrides.push(("AUTHD_REDIS_NAMESPACE", namespace.as_str()));
    let a = spawn_app_with(&overrides).await;
    let b_app = authd::startup::Server::build(
        settings(&a.database_url, &overrides),
        authd::clock::Clock::system(),
        false,
    )
    .await
    .unwrap();
    let b = spawn_on(b_app).await;
    a.register("cid").await;
    for i in 0..5 {
        let target = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            login_from(target, "203.0.113.1", "cid", "wrong password!")
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
    for target in [&a, &b] {
        assert_eq!(
            login_from(target, "203.0.113.2", "cid", "wrong password!")
                .await
                .unwrap_err()
                .code(),
            Code::ResourceExhausted
        );
    }
}
