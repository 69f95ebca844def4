//! `authd-client` against the real server over real channels: list-then-watch revocations,
//! in-process verification, revocation pushed within a second, key rotation, failing closed when
//! authd is gone, and the tower layer in a tonic and an axum service.

use crate::cluster::*;
use crate::helpers::*;
use crate::introspection::{forged_tokens, jwks};
use authd::proto::watch_revocations_response::Event;
use authd::proto::*;
use authd_client::{AuthLayer, ConnectError, Identity, Options, Rejection, TokenType, Verifier};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;

async fn connect(addr: std::net::SocketAddr, credential: &str, options: Options) -> Verifier {
    Verifier::connect(&format!("http://{addr}"), credential, options)
        .await
        .expect("the verifier connects")
}

/// How long until `verify` refuses `token` with one of `rejections` (panics after `limit`).
async fn refused_within(verifier: &Verifier, token: &str, rejections: &[Rejection], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match verifier.verify(token).await {
            Err(r) if rejections.contains(&r) => return started.elapsed(),
            other => assert!(
                started.elapsed() < limit,
                "still {other:?} after {limit:?}, not {rejections:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn watch(app: &TestApp, credential: &str, since: &str) -> tonic::Streaming<WatchRevocationsResponse> {
    app.tokens()
        .watch_revocations(bearer(
            WatchRevocationsRequest {
                since: since.into(),
                heartbeat_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 100_000_000,
                }),
            },
            credential,
        ))
        .await
        .expect("WatchRevocations")
        .into_inner()
}

/// The revocation events up to the marker, and the marker.
async fn until_marker(stream: &mut tonic::Streaming<WatchRevocationsResponse>) -> (Vec<Event>, SnapshotComplete) {
    let mut before = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream answers")
            .expect("the stream is open")
            .expect("no error");
        match message.event.expect("an event") {
            Event::SnapshotComplete(marker) => return (before, marker),
            Event::Heartbeat(_) => panic!("a heartbeat before the marker"),
            event => before.push(event),
        }
    }
}

fn sessions_in(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Revocation(r) if r.kind() == RevocationKind::Session => Some(r.subject_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn watch_revocations_lists_then_watches_and_resumes_from_its_cursor() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let early = app.user("max").await;
    app.auth()
        .logout(bearer(LogoutRequest::default(), &early.access_token))
        .await
        .unwrap();

    // A watcher that starts after the logout hears of it in the snapshot.
    let mut stream = watch(&app, &introspector, "").await;
    let (snapshot, marker) = until_marker(&mut stream).await;
    assert!(sessions_in(&snapshot).contains(&early.session_id), "{snapshot:?}");
    assert!(!marker.resumed);
    assert_eq!(marker.revocations as usize, snapshot.len());
    for event in &snapshot {
        let Event::Revocation(r) = event else {
            panic!("{event:?}")
        };
        assert!(
            r.cursor.is_empty() && r.expires_at.is_some() && r.until.is_some(),
            "{r:?}"
        );
    }
    // Live: the heartbeat comes at the pace asked for (the server's own is 15 s).
    let heartbeat = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
    assert!(
        matches!(&heartbeat, Ok(Some(Ok(m))) if matches!(m.event, Some(Event::Heartbeat(_)))),
        "{heartbeat:?}"
    );
    drop(stream);

    // What happens while the watcher is away comes first when it resumes, and only that.
    let missed = app.user("ned").await;
    app.auth()
        .logout(bearer(LogoutRequest::default(), &missed.access_token))
        .await
        .unwrap();
    let mut resumed = watch(&app, &introspector, &marker.cursor).await;
    let (replayed, again) = until_marker(&mut resumed).await;
    assert!(again.resumed);
    let replayed_sessions = sessions_in(&replayed);
    assert_eq!(replayed_sessions, vec![missed.session_id.clone()], "{replayed:?}");
    for event in &replayed {
        let Event::Revocation(r) = event else {
            panic!("{event:?}")
        };
        assert!(!r.cursor.is_empty(), "live and replayed events carry a cursor");
    }
    // Then live events, each with a cursor that resumes right after it.
    let live = app.user("oda").await;
    app.auth()
        .logout(bearer(LogoutRequest::default(), &live.access_token))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(Event::Revocation(r)) = resumed.next().await.unwrap().unwrap().event {
                return r;
            }
        }
    })
    .await
    .expect("the live event");
    assert_eq!(event.subject_id, live.session_id);
    let mut after = watch(&app, &introspector, &event.cursor).await;
    let (nothing, marker) = until_marker(&mut after).await;
    assert!(marker.resumed && nothing.is_empty(), "{nothing:?}");

    // Another replica's (or an earlier process's) cursor: Resync, then a full snapshot.
    let mut other = watch(&app, &introspector, "0123456789abcdef.3").await;
    let first = other.next().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Resync(_))), "{first:?}");
    let (snapshot, marker) = until_marker(&mut other).await;
    assert!(!marker.resumed);
    let sessions = sessions_in(&snapshot);
    for session in [&early.session_id, &missed.session_id, &live.session_id] {
        assert!(sessions.contains(session));
    }
    // Something that is not a cursor at all is the caller's mistake.
    let bad = app
        .tokens()
        .watch_revocations(bearer(
            WatchRevocationsRequest {
                since: "not a cursor".into(),
                heartbeat_interval: None,
            },
            &introspector,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_verifier_decides_locally_and_refuses_what_was_revoked_before_it_started() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let gone = app.user("gus").await;
    let live = app.user("hal").await;
    app.auth()
        .logout(bearer(LogoutRequest::default(), &gone.access_token))
        .await
        .unwrap();
    let verifier = connect(app.addr, &introspector, Options::default()).await;
    assert_eq!(verifier.rules().issuer, app.app.settings.tokens.issuer);

    assert_eq!(verifier.verify(&gone.access_token).await, Err(Rejection::Revoked));
    let identity = verifier.verify(&live.access_token).await.unwrap();
    let me = app.me(&live.access_token).await;
    assert_eq!(identity.subject.to_string(), me.id);
    assert_eq!(identity.username, "hal");
    assert_eq!(identity.session.map(|s| s.to_string()), Some(live.session_id.clone()));
    assert_eq!(identity.token_type, TokenType::AccessToken);
    assert!(identity.has_role("user"));
    assert!(identity.expires_at.is_some());
    assert_eq!(
        verifier.verify(&format!("  {}  ", live.access_token)).await,
        Ok(identity),
        "surrounding space is not part of the token"
    );

    for (what, token) in forged_tokens(&live, &jwks(&app).await) {
        let answer = verifier.verify(&token).await;
        assert!(
            matches!(answer, Err(r) if r != Rejection::Unavailable),
            "{what}: {answer:?}"
        );
    }
    let stats = verifier.stats();
    assert_eq!(
        stats.introspected, 0,
        "every access token was decided locally: {stats:?}"
    );
    assert!(stats.view_current && stats.keys_current, "{stats:?}");
    assert!(stats.revocations >= 1);

    // An API key is asked of Introspect once, then answered from the cache.
    let key = verifier.verify(&introspector).await.unwrap();
    assert_eq!(key.token_type, TokenType::ApiKey);
    assert!(key.has_scope("tokens:introspect") && key.roles.is_empty() && key.session.is_none());
    verifier.verify(&introspector).await.unwrap();
    let stats = verifier.stats();
    assert_eq!(
        (stats.introspected, stats.introspection_cache_hits),
        (2, 1),
        "{stats:?}"
    );
    // A typo'd key never leaves the process.
    let mut typo = introspector.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(verifier.verify(&typo).await, Err(Rejection::Malformed));
    assert_eq!(verifier.stats().introspected, 2);

    // A credential without the introspection scope cannot follow the streams.
    let refused = Verifier::connect(&format!("http://{}", app.addr), &live.access_token, Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ConnectError::Refused(ref s) if s.code() == Code::PermissionDenied),
        "{refused:?}"
    );
    let wrong = Options {
        audience: Some("someone-else".into()),
        ..Options::default()
    };
    let mismatch = Verifier::connect(&format!("http://{}", app.addr), &introspector, wrong)
        .await
        .unwrap_err();
    assert!(matches!(mismatch, ConnectError::Mismatch(_)), "{mismatch:?}");
    // A heartbeat too slow for the staleness it must prevent is refused before any call.
    let slow = Options {
        heartbeat_interval: Duration::from_secs(4),
        ..Options::default()
    };
    let refused = Verifier::connect(&format!("http://{}", app.addr), &introspector, slow)
        .await
        .unwrap_err();
    assert!(matches!(refused, ConnectError::Options(_)), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_another_replica_reach_a_verifier_within_a_second() {
    let (_, database_url) = fresh_database().await;
    let env = deployment_env(&database_url, Some(&shared_redis()));
    let (a, b) = two_replicas(&env).await;
    let introspector = a.introspector().await;
    let verifier = connect(a.addr, &introspector, Options::default()).await;
    b.register("ivy").await;

    let mut latencies = Vec::new();
    for _ in 0..50 {
        let tokens = b.login("ivy", PASSWORD).await;
        verifier
            .verify(&tokens.access_token)
            .await
            .expect("a fresh token verifies");
        b.auth()
            .logout(LogoutRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap();
        latencies.push(
            refused_within(
                &verifier,
                &tokens.access_token,
                &[Rejection::Revoked],
                Duration::from_secs(5),
            )
            .await,
        );
    }
    let p99 = p99(latencies.clone());
    eprintln!(
        "logout on B reached a verifier following A after: p99 {p99:?}, max {:?}",
        latencies.iter().max().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // A user-wide revocation (an administrator locks the account).
    let tokens = b.login("ivy", PASSWORD).await;
    verifier.verify(&tokens.access_token).await.unwrap();
    let admin = b.admin().await;
    let ivy = b.me(&tokens.access_token).await;
    b.users()
        .lock_user(bearer(
            LockUserRequest {
                user_id: ivy.id.clone(),
                duration: None,
                reason: "test".into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    refused_within(
        &verifier,
        &tokens.access_token,
        &[Rejection::Revoked],
        Duration::from_secs(1),
    )
    .await;

    // An API key: answered by Introspect and cached, yet its revocation is heard at once.
    let owner = b.user("jay").await;
    let key = b.api_key(&owner.access_token, &["tasks:read"]).await;
    assert_eq!(verifier.verify(&key).await.unwrap().token_type, TokenType::ApiKey);
    let id = b
        .api_keys()
        .list_api_keys(bearer(ListApiKeysRequest {}, &owner.access_token))
        .await
        .unwrap()
        .into_inner()
        .api_keys[0]
        .id
        .clone();
    b.api_keys()
        .revoke_api_key(bearer(RevokeApiKeyRequest { id }, &owner.access_token))
        .await
        .unwrap();
    // Revoked by the view, or (once the event dropped the cached answer) inactive by Introspect.
    refused_within(
        &verifier,
        &key,
        &[Rejection::Revoked, Rejection::Inactive],
        Duration::from_secs(1),
    )
    .await;

    // A rotated secret (no grace): the cached answer for the old one is dropped.
    let key = b.api_key(&owner.access_token, &["tasks:read"]).await;
    verifier.verify(&key).await.unwrap();
    let listed = b
        .api_keys()
        .list_api_keys(bearer(ListApiKeysRequest {}, &owner.access_token))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    let id = listed.iter().find(|k| key.starts_with(&k.prefix)).unwrap().id.clone();
    let rotated = b
        .api_keys()
        .rotate_api_key(bearer(
            RotateApiKeyRequest { id, grace_period: None },
            &owner.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    refused_within(&verifier, &key, &[Rejection::Inactive], Duration::from_secs(1)).await;
    assert!(verifier.verify(&rotated.secret).await.is_ok());
    let stats = verifier.stats();
    assert_eq!(stats.fallbacks, 0, "no access token needed Introspect: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_new_key_verify_without_fetching_the_keys() {
    let (_, database_url) = fresh_database().await;
    let mut env = deployment_env(&database_url, Some(&shared_redis()));
    env.push(("AUTHD_KEY_PUBLISH_AHEAD".into(), "2s".into()));
    let (a, b) = two_replicas(&env).await;
    let introspector = a.introspector().await;
    let verifier = connect(a.addr, &introspector, Options::default()).await;
    let before = a.user("jon").await;
    verifier.verify(&before.access_token).await.unwrap();
    let old_kid = a.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys[0]
        .kid
        .clone();
    let out = keys_command(&env, &["rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Published at once (through Redis) and signing two seconds later, on every replica.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = b.user("kim").await;
    let set = a.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
    assert_eq!(set.keys.len(), 2);
    let header = fresh.access_token.split('.').next().unwrap();
    let header = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap();
    let kid = serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kid, set.keys[0].kid, "signed with the new key");
    verifier.verify(&fresh.access_token).await.unwrap();
    let stats = verifier.stats();
    assert_eq!(
        (stats.introspected, stats.fallbacks),
        (0, 0),
        "the new key came through WatchKeys, ahead of its first token: {stats:?}"
    );
    // Revoking the retired key ends its tokens in the verifier too, cached as they are.
    verifier.verify(&before.access_token).await.unwrap();
    let out = keys_command(&env, &["revoke", &old_kid]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    refused_within(
        &verifier,
        &before.access_token,
        &[Rejection::UnknownKey],
        Duration::from_secs(1),
    )
    .await;
    assert!(verifier.verify(&fresh.access_token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_fails_closed_while_authd_is_gone_and_recovers_by_itself() {
    let (_, database_url) = fresh_database().await;
    let env = deployment_env(&database_url, None);
    let (grpc, http) = (free_port(), free_port());
    let a = Replica::start_on(&env, grpc, http).await;
    let introspector = a.introspector().await;
    let tokens = a.user("lea").await;
    let options = Options {
        max_staleness: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        max_backoff: Duration::from_millis(500),
        ..Options::default()
    };
    let verifier = connect(a.addr, &introspector, options).await;
    assert!(verifier.verify(&tokens.access_token).await.is_ok());

    drop(a); // SIGKILL
    let killed = Instant::now();
    let waited = refused_within(
        &verifier,
        &tokens.access_token,
        &[Rejection::Unavailable],
        Duration::from_secs(10),
    )
    .await;
    eprintln!("the verifier stopped trusting its view {waited:?} after authd was killed");
    assert!(!verifier.is_current());
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "past max_staleness (1 s) and one Introspect timeout, it fails closed"
    );

    let a = Replica::start_on(&env, grpc, http).await;
    let back = Instant::now();
    loop {
        if verifier.verify(&tokens.access_token).await.is_ok() && verifier.is_current() {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "{:?}", verifier.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("back in step {:?} after authd restarted", back.elapsed());
    assert!(verifier.stats().stream_restarts >= 1);
    // The new process's revocations reach it (its cursor was from the old one: a resync).
    a.auth()
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    refused_within(
        &verifier,
        &tokens.access_token,
        &[Rejection::Revoked],
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_layer_guards_a_tonic_and_an_axum_service() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let verifier = connect(app.addr, &introspector, Options::default()).await;

    // A tonic service (the standard health service) behind the layer.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let layer = AuthLayer::new(verifier.clone()).require_scope_for("/grpc.health.v1.Health/Watch", "tasks:write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest { service: String::new() };
    let anonymous = client.check(check()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let tokens = app.user("meg").await;
    let answer = client.check(bearer(check(), &tokens.access_token)).await.unwrap();
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
    // A credential without the route's scope.
    let reader = app.api_key(&tokens.access_token, &["tasks:read"]).await;
    assert!(client.check(bearer(check(), &reader)).await.is_ok());
    let watch = client.watch(bearer(check(), &reader)).await.unwrap_err();
    assert_eq!(watch.code(), Code::PermissionDenied);
    // Right after a logout.
    app.auth()
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        match client.check(bearer(check(), &tokens.access_token)).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            other => assert!(started.elapsed() < Duration::from_secs(1), "{other:?}"),
        }
    }

    // An axum service behind the same layer; the handler reads the identity.
    let router = axum::Router::new()
        .route(
            "/orders",
            axum::routing::get(|axum::Extension(identity): axum::Extension<Identity>| async move { identity.username }),
        )
        .layer(AuthLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let anonymous = http_request(addr, "GET", "/orders", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.headers["www-authenticate"], r#"Bearer realm="authd""#);
    let other = app.user("ned").await;
    let bearer_header = format!("Bearer {}", other.access_token);
    let answer = http_request(addr, "GET", "/orders", &[("Authorization", &bearer_header)]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ned"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_does_not_trust_a_replica_that_lost_its_feed() {
    let mut redis = PrivateRedis::start().await;
    let (_, database_url) = fresh_database().await;
    let mut env = deployment_env(&database_url, Some(&redis.url()));
    // No periodic re-read: while Redis is away, A's own view misses B's revocations.
    env.push(("AUTHD_REVOCATION_RESYNC_INTERVAL".into(), "1h".into()));
    let (a, b) = two_replicas(&env).await;
    let introspector = a.introspector().await;
    let verifier = connect(a.addr, &introspector, Options::default()).await;
    let tokens = b.user("pia").await;
    verifier.verify(&tokens.access_token).await.unwrap();
    assert_eq!(verifier.stats().fallbacks, 0);

    redis.stop();
    a.await_feed(false, Duration::from_secs(3)).await;
    // A says it is behind at its next heartbeat (1 s): from then on access tokens go to A's
    // Introspect, which checks Postgres.
    let started = Instant::now();
    while verifier.is_current() {
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", verifier.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.auth()
        .logout(LogoutRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap();
    // The feed is down, so neither A's view nor the verifier's heard of it; Postgres has.
    refused_within(
        &verifier,
        &tokens.access_token,
        &[Rejection::Inactive],
        Duration::from_secs(1),
    )
    .await;
    assert!(verifier.stats().fallbacks >= 1);

    redis.resume().await;
    a.await_feed(true, Duration::from_secs(10)).await;
    let back = Instant::now();
    while !verifier.is_current() {
        assert!(back.elapsed() < Duration::from_secs(5), "{:?}", verifier.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In step again, and A's view caught up on resubscribing: refused locally now.
    assert_eq!(verifier.verify(&tokens.access_token).await, Err(Rejection::Revoked));
}
