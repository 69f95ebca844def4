//! The audit trail.

use crate::helpers::*;
use authd::proto::*;
use std::time::Duration;
use tonic::Code;

async fn events(
    app: &TestApp,
    credential: &str,
    request: ListAuditEventsRequest,
) -> Result<ListAuditEventsResponse, tonic::Status> {
    app.audit_events()
        .list_audit_events(bearer(request, credential))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn users_see_their_own_logins_and_admins_see_everyone() {
    let app = spawn_app().await;
    let user = app.register("ann").await;
    let _ = app
        .auth()
        .login(LoginRequest {
            identifier: "ann".into(),
            password: "not the password".into(),
            device_name: None,
        })
        .await
        .unwrap_err();
    let tokens = app.login("ann", PASSWORD).await;
    let other = app.user("bob").await;

    let mine = events(&app, &tokens.access_token, ListAuditEventsRequest::default())
        .await
        .unwrap()
        .events;
    assert!(mine.iter().all(|e| e.user_id == user.id), "only ann's own events");
    let succeeded = mine
        .iter()
        .find(|e| e.r#type == "login.succeeded")
        .expect("the successful login");
    let failed = mine
        .iter()
        .find(|e| e.r#type == "login.failed")
        .expect("the failed login");
    assert_eq!(failed.outcome, "failure");
    assert!(failed.details.contains("wrong_password"), "{}", failed.details);
    assert!(!failed.details.contains("not the password"), "never a secret");
    for event in [succeeded, failed] {
        assert_eq!(event.ip_address, "127.0.0.1");
        assert!(event.user_agent.contains("tonic"), "{}", event.user_agent);
        assert!(event.occurred_at.is_some());
    }
    assert!(mine.iter().any(|e| e.r#type == "user.registered"));
    // Someone else's events: refused.
    let denied = events(
        &app,
        &tokens.access_token,
        ListAuditEventsRequest {
            user_id: other_id(&app, &other).await,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let admin = app.admin().await;
    let all = events(
        &app,
        &admin.access_token,
        ListAuditEventsRequest {
            page_size: 200,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .events;
    assert!(all.iter().any(|e| e.user_id == user.id) && all.iter().any(|e| e.user_id != user.id));
    let anns = events(
        &app,
        &admin.access_token,
        ListAuditEventsRequest {
            user_id: user.id.clone(),
            r#type: "login.failed".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .events;
    assert_eq!(anns.len(), 1);
    // Paged one at a time, newest first, without repeats.
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = events(
            &app,
            &tokens.access_token,
            ListAuditEventsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        ids.extend(page.events.iter().map(|e| e.id.parse::<i64>().unwrap()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), mine.len());
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
}

async fn other_id(app: &TestApp, tokens: &TokenPair) -> String {
    app.users()
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}

#[tokio::test]
async fn security_events_are_recorded() {
    let app = spawn_app().await;
    let tokens = app.user("cat").await;
    let rotated = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap();
    let _ = rotated;
    let _ = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await;
    let fresh = app.login("cat", PASSWORD).await;
    app.api_keys()
        .create_api_key(bearer(
            CreateApiKeyRequest {
                label: "k".into(),
                scopes: vec!["tasks:read".into()],
                expires_at: None,
            },
            &fresh.access_token,
        ))
        .await
        .unwrap();
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
            &fresh.access_token,
        ))
        .await
        .unwrap();
    app.auth()
        .logout(bearer(LogoutRequest::default(), &fresh.access_token))
        .await
        .unwrap();
    let admin = app.admin().await;
    let me = other_id(&app, &app.login("cat", "a brand new password").await).await;
    let kinds: Vec<String> = events(
        &app,
        &admin.access_token,
        ListAuditEventsRequest {
            user_id: me,
            page_size: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .events
    .into_iter()
    .map(|e| e.r#type)
    .collect();
    for kind in [
        "user.registered",
        "login.succeeded",
        "token.refreshed",
        "refresh_token.reused",
        "api_key.created",
        "password.changed",
        "logout",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn old_events_are_purged_after_the_retention() {
    let app = spawn_app_with(&[
        ("AUTHD_AUDIT_RETENTION", "2s"),
        ("AUTHD_HOUSEKEEPING_INTERVAL", "500ms"),
    ])
    .await;
    let user = app.register("dot").await;
    let admin = app.admin().await;
    let count = || {
        let mut client = app.audit_events();
        let (token, id) = (admin.access_token.clone(), user.id.clone());
        async move {
            client
                .list_audit_events(bearer(
                    ListAuditEventsRequest {
                        user_id: id,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .events
                .len()
        }
    };
    assert_eq!(count().await, 1);
    crate::cluster::within(Duration::from_secs(10), || async { count().await == 0 }).await;
}
