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
        assert!(
            header.keep_empty_value,
            "an empty value replaces a client's: {header:?}"
        );
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
    let me = app.me(&user.access_token).await;
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
        &[
            ("authorization", &authorization),
            ("x-authd-sid", "forged"),
            ("x_authd_roles", "admin"),
        ],
        Some("tasks:read"),
    )
    .await
    .unwrap();
    let (headers, removed) = allowed(&answer);
    assert_eq!(headers["x-authd-token-type"], "api_key");
    assert_eq!(headers["x-authd-scope"], "tasks:read");
    assert_eq!(
        (headers["x-authd-sid"].as_str(), headers["x-authd-roles"].as_str()),
        ("", "")
    );
    assert_eq!(
        removed,
        ["x_authd_roles"],
        "the forged session is overwritten with nothing"
    );

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

#[tokio::test]
async fn forward_auth_answers_with_status_headers_and_challenges() {
    let app = spawn_app().await;
    let user = app.user("kit").await;
    let key = app.api_key(&user.access_token, &["tasks:read"]).await;
    let live = format!("Bearer {}", user.access_token);
    let answer = http_request(app.http, "GET", "/forward-auth", &[("Authorization", &live)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["x-authd-token-type"], "access_token");
    assert_eq!(answer.headers["x-authd-roles"], "user");
    assert_eq!(answer.headers["cache-control"], "no-store");

    // Any method: Traefik and Caddy forward the original one.
    let keyed = format!("Bearer {key}");
    let answer = http_request(
        app.http,
        "POST",
        "/forward-auth?required_scopes=tasks%3Aread",
        &[("Authorization", &keyed), ("Content-Length", "0")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-authd-scope"], "tasks:read");
    assert!(!answer.headers.contains_key("x-authd-sid"));

    let answer = http_request(
        app.http,
        "GET",
        "/forward-auth?required_scopes=tasks:read,tasks:write",
        &[("Authorization", &keyed)],
    )
    .await;
    assert_eq!(answer.status, 403);
    assert!(answer.headers["www-authenticate"].contains("scope=\"tasks:read tasks:write\""));

    // Two credentials: the upstream might read the other one.
    let answer = http_request(
        app.http,
        "GET",
        "/forward-auth",
        &[("Authorization", &live), ("Authorization", "Bearer x")],
    )
    .await;
    assert_eq!(answer.status, 401);
    let answer = http_request(app.http, "GET", "/forward-auth", &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers["www-authenticate"], "Bearer realm=\"authd\"");
    let answer = http_request(
        app.http,
        "GET",
        "/forward-auth",
        &[("Authorization", "Bearer nonsense")],
    )
    .await;
    assert_eq!(answer.status, 401);
    assert!(answer.headers["www-authenticate"].ends_with("error=\"invalid_token\""));
    assert!(!answer.headers.contains_key("x-authd-sub"));
}

#[tokio::test]
async fn the_jwks_is_cached_and_revalidated_by_etag() {
    let app = spawn_app().await;
    let first = http_request(app.http, "GET", "/.well-known/jwks.json", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["cache-control"], "public, max-age=300");
    let etag = first.headers["etag"].clone();
    assert!(etag.starts_with('"') && etag.len() > 10, "a strong ETag: {etag}");
    let again = http_request(app.http, "GET", "/.well-known/jwks.json", &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let stale = http_request(
        app.http,
        "GET",
        "/.well-known/jwks.json",
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
}

/// An upstream that answers with what it was told about the caller.
async fn echo_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let seen = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or("-")
                        .trim()
                        .to_string()
                };
                let body = format!("sub={} sid={}\n", seen("x-authd-sub"), seen("x-authd-sid"));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// nginx, started on a free port from the README's configuration (`deploy/gateways/nginx.conf`).
struct Nginx {
    dir: std::path::PathBuf,
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Nginx {
    async fn start(authd_http: std::net::SocketAddr, upstream: std::net::SocketAddr) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is installed (scripts/test.sh installs nginx-light)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = std::env::temp_dir().join(format!("authd-nginx-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let server = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/gateways/nginx.conf"))
            .unwrap()
            .replace("127.0.0.1:8080", &authd_http.to_string())
            .replace("127.0.0.1:9000", &upstream.to_string())
            .replace("listen 127.0.0.1:8000", &format!("listen {addr}"));
        let tmp = dir.join("tmp");
        let tmp = tmp.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {log} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {tmp};\n proxy_temp_path {tmp};\n\
             fastcgi_temp_path {tmp};\n uwsgi_temp_path {tmp};\n scgi_temp_path {tmp};\n{server}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("error.log").display(),
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "nginx did not start: {log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { dir, child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn nginx_auth_request_lets_live_credentials_through_and_nothing_else() {
    let app = spawn_app_with(&[("AUTHD_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let upstream = echo_upstream().await;
    let nginx = Nginx::start(app.http, upstream).await;
    let user = app.user("lea").await;
    let me = app.me(&user.access_token).await;
    let live = format!("Bearer {}", user.access_token);

    // A live token reaches the upstream, which learns who it is, and not what the client claimed.
    let answer = http_request(
        nginx.addr,
        "GET",
        "/",
        &[("Authorization", &live), ("X-Authd-Sub", "admin")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.starts_with(&format!("sub={} sid=", me.id)),
        "{}",
        answer.body
    );

    for refused in [None, Some("Bearer garbage")] {
        let headers: Vec<(&str, &str)> = refused.map(|v| ("Authorization", v)).into_iter().collect();
        let answer = http_request(nginx.addr, "GET", "/", &headers).await;
        assert_eq!(answer.status, 401, "{refused:?}");
        assert!(answer.headers["www-authenticate"].starts_with("Bearer realm=\"authd\""));
        assert!(!answer.body.contains("sub="), "the upstream was not reached");
    }

    // The route needs tasks:read, which a user's session does not hold; a key with it passes.
    let answer = http_request(nginx.addr, "GET", "/tasks/1", &[("Authorization", &live)]).await;
    assert_eq!(answer.status, 403);
    let key = app.api_key(&user.access_token, &["tasks:read"]).await;
    let keyed = format!("Bearer {key}");
    let answer = http_request(
        nginx.addr,
        "GET",
        "/tasks/1",
        &[("Authorization", &keyed), ("X-Authd-Sid", "forged")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        format!("sub={} sid=-\n", me.id),
        "no session, and the forged one is gone"
    );

    // Revoked: refused at once.
    app.auth()
        .logout(LogoutRequest {
            refresh_token: user.refresh_token.clone(),
        })
        .await
        .unwrap();
    let answer = http_request(nginx.addr, "GET", "/", &[("Authorization", &live)]).await;
    assert_eq!(answer.status, 401);
}

#[test]
fn the_readme_shows_the_nginx_configuration_the_tests_run() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let nginx = std::fs::read_to_string(format!("{root}/deploy/gateways/nginx.conf")).unwrap();
    assert!(
        readme.contains(&format!("```nginx\n{nginx}```")),
        "README's nginx block differs from deploy/gateways/nginx.conf"
    );
}
