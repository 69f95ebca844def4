//! Gateways: Envoy's `Check`, called with a client generated from Envoy's own protos (the
//! `envoy-types` crate), as Envoy's ext_authz filter calls it.

use crate::cluster::*;
use crate::helpers::*;
use authd::proto::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request as HttpAttributes};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

/// What Envoy sends: the request's headers (lower-cased) and the route's context extensions.
fn check_request(headers: &[(&str, &str)], required_scopes: Option<&str>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(HttpAttributes {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/tasks".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: required_scopes
                .map(|s| HashMap::from([("required_scopes".to_string(), s.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

async fn check(
    client: &Client,
    gateway: &str,
    headers: &[(&str, &str)],
    required_scopes: Option<&str>,
) -> Result<CheckResponse, tonic::Status> {
    AuthorizationClient::new(client.channel.clone())
        .check(bearer(check_request(headers, required_scopes), gateway))
        .await
        .map(|r| r.into_inner())
}

fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map(|s| s.code).unwrap_or_default()
}

/// The headers of an allowed answer, and those it removes.
fn allowed(response: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    assert_eq!(code(response), Code::Ok as i32, "{response:?}");
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not allowed: {response:?}");
    };
    for header in &ok.headers {
        assert_eq!(header.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD: {header:?}");
    }
    let headers = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    (headers, ok.headers_to_remove.clone())
}

/// The HTTP status and `www-authenticate` of a refusal.
fn denied(response: &CheckResponse) -> (i32, String) {
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("not denied: {response:?}");
    };
    let challenge = denied
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "www-authenticate")
        .map(|h| h.value.clone())
        .unwrap_or_default();
    (denied.status.as_ref().map(|s| s.code).unwrap_or_default(), challenge)
}

#[tokio::test]
async fn check_allows_live_credentials_and_names_the_caller() {
    let app = spawn_app().await;
    let gateway = app.introspector().await;
    let user = app.user("gus").await;
    let me = app
        .users()
        .get_me(bearer(GetMeRequest {}, &user.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let authorization = format!("Bearer {}", user.access_token);
    let answer = check(
        &app.client,
        &gateway,
        &[
            ("authorization", &authorization),
            ("x-authd-sub", "someone-else"),
            ("x-authd-admin", "true"),
            ("x-other", "kept"),
        ],
        None,
    )
    .await
    .unwrap();
    let (headers, removed) = allowed(&answer);
    assert_eq!(headers["x-authd-sub"], me.id, "the spoofed value is overwritten");
    assert_eq!(headers["x-authd-token-type"], "access_token");
    assert_eq!(headers["x-authd-roles"], "user");
    assert_eq!(headers["x-authd-scope"], "profile");
    assert!(!headers["x-authd-sid"].is_empty());
    assert_eq!(removed, ["x-authd-admin"], "what authd does not set cannot be spoofed");
    let metadata = answer.dynamic_metadata.expect("the identity in dynamic metadata");
    assert!(metadata.fields.contains_key("sub"));

    // An API key: its scopes, no session, no roles; a client's x-authd-sid must go.
    let key = app.api_key(&user.access_token, &["tasks:read"]).await;
    let authorization = format!("Bearer {key}");
    let answer = check(
        &app.client,
        &gateway,
        &[("authorization", &authorization), ("x-authd-sid", "forged")],
        Some("tasks:read"),
    )
    .await
    .unwrap();
    let (headers, removed) = allowed(&answer);
    assert_eq!(headers["x-authd-token-type"], "api_key");
    assert_eq!(headers["x-authd-scope"], "tasks:read");
    assert!(!headers.contains_key("x-authd-sid") && !headers.contains_key("x-authd-roles"));
    assert_eq!(removed, ["x-authd-sid"]);

    // Without every scope the route requires: 403, naming them.
    let answer = check(
        &app.client,
        &gateway,
        &[("authorization", &authorization)],
        Some("tasks:read tasks:write"),
    )
    .await
    .unwrap();
    assert_eq!(code(&answer), Code::PermissionDenied as i32);
    let (status, challenge) = denied(&answer);
    assert_eq!(status, 403);
    assert_eq!(
        challenge,
        "Bearer realm=\"authd\", error=\"insufficient_scope\", scope=\"tasks:read tasks:write\""
    );
}

#[tokio::test]
async fn check_refuses_missing_forged_expired_and_revoked_credentials() {
    let app = spawn_app().await;
    let gateway = app.introspector().await;
    let user = app.user("hal").await;

    let answer = check(&app.client, &gateway, &[], None).await.unwrap();
    assert_eq!(code(&answer), Code::Unauthenticated as i32);
    assert_eq!(denied(&answer), (401, "Bearer realm=\"authd\"".to_string()));

    let mut forged = user.access_token.clone();
    forged.pop();
    forged.push(if user.access_token.ends_with('A') { 'B' } else { 'A' });
    for presented in [format!("Bearer {forged}"), "Bearer garbage".into(), "Basic abc".into()] {
        let answer = check(&app.client, &gateway, &[("authorization", &presented)], None)
            .await
            .unwrap();
        assert_eq!(code(&answer), Code::Unauthenticated as i32, "{presented}");
        assert_eq!(
            denied(&answer),
            (401, "Bearer realm=\"authd\", error=\"invalid_token\"".to_string())
        );
    }

    // Revoked: a logout is seen by the next Check.
    let live = format!("Bearer {}", user.access_token);
    allowed(
        &check(&app.client, &gateway, &[("authorization", &live)], None)
            .await
            .unwrap(),
    );
    app.auth()
        .logout(LogoutRequest {
            refresh_token: user.refresh_token.clone(),
        })
        .await
        .unwrap();
    within(Duration::from_secs(1), || async {
        let answer = check(&app.client, &gateway, &[("authorization", &live)], None)
            .await
            .unwrap();
        code(&answer) == Code::Unauthenticated as i32
    })
    .await;

    // Expired.
    let other = app.login("hal", PASSWORD).await;
    let other = format!("Bearer {}", other.access_token);
    allowed(
        &check(&app.client, &gateway, &[("authorization", &other)], None)
            .await
            .unwrap(),
    );
    app.clock.advance(Duration::from_secs(16 * 60));
    let answer = check(&app.client, &gateway, &[("authorization", &other)], None)
        .await
        .unwrap();
    assert_eq!(code(&answer), Code::Unauthenticated as i32);
}

#[tokio::test]
async fn check_refuses_gateways_that_may_not_ask() {
    let app = spawn_app().await;
    let user = app.user("ida").await;
    let plain_key = app.api_key(&user.access_token, &["tasks:read"]).await;
    let live = format!("Bearer {}", user.access_token);
    // Refused with an answer, not an error: a failure_mode_allow gateway must not pass it.
    for gateway in [plain_key.as_str(), user.access_token.as_str(), "authd_not_a_key"] {
        let answer = check(&app.client, gateway, &[("authorization", &live)], None)
            .await
            .unwrap();
        assert_eq!(code(&answer), Code::PermissionDenied as i32);
        assert_eq!(denied(&answer).0, 403);
    }
    let answer = AuthorizationClient::new(app.client.channel.clone())
        .check(check_request(&[("authorization", &live)], None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied(&answer).0, 403, "no gateway credential at all");
    // A route whose required scopes are not scopes is refused too.
    let gateway = app.introspector().await;
    let answer = check(&app.client, &gateway, &[("authorization", &live)], Some("\"quoted\""))
        .await
        .unwrap();
    assert_eq!(denied(&answer).0, 403);
}

/// With Postgres stopped a hot token is still allowed (the path touches no database) and a
/// revoked one still refused; with Redis stopped too nothing can prove a revocation absent, so
/// `Check` errs (UNAVAILABLE) and never allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_needs_no_database_for_a_hot_token_and_never_allows_blind() {
    let postgres = PrivatePostgres::start();
    let mut redis = PrivateRedis::start().await;
    let database_url = postgres.create_database("gateway_outage").await;
    let env = deployment_env(&database_url, Some(&redis.url()));
    let node = Replica::start(&env).await;
    node.await_feed(true, Duration::from_secs(10)).await;
    let gateway = node.introspector().await;
    node.register("jon").await;
    let valid = node.login("jon", PASSWORD).await;
    let revoked = node.login("jon", PASSWORD).await;
    node.auth()
        .logout(LogoutRequest {
            refresh_token: revoked.refresh_token.clone(),
        })
        .await
        .unwrap();
    let valid = format!("Bearer {}", valid.access_token);
    let revoked = format!("Bearer {}", revoked.access_token);
    allowed(
        &check(&node.client, &gateway, &[("authorization", &valid)], None)
            .await
            .unwrap(),
    );

    postgres.stop();
    for _ in 0..20 {
        allowed(
            &check(&node.client, &gateway, &[("authorization", &valid)], None)
                .await
                .unwrap(),
        );
        let answer = check(&node.client, &gateway, &[("authorization", &revoked)], None)
            .await
            .unwrap();
        assert_eq!(code(&answer), Code::Unauthenticated as i32);
    }

    redis.stop();
    node.await_feed(false, Duration::from_secs(3)).await;
    let status = check(&node.client, &gateway, &[("authorization", &valid)], None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis.resume().await;
    postgres.resume();
}
