//! Revocation across replicas and through outages (security rules 6 and 7).

use crate::cluster::*;
use crate::helpers::*;
use authd::proto::*;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Three replicas on one database and one Redis, all following the feed.
async fn three_replicas(extra: &[(&str, &str)]) -> (Replica, Replica, Replica, Vec<(String, String)>) {
    let (_, database_url) = fresh_database().await;
    let mut env = deployment_env(&database_url, Some(&shared_redis()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // The first one migrates and creates the signing key and the admin; then the others.
    let a = Replica::start(&env).await;
    let (b, c) = tokio::join!(Replica::start(&env), Replica::start(&env));
    for replica in [&a, &b, &c] {
        replica.await_feed(true, Duration::from_secs(10)).await;
    }
    (a, b, c, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_reaches_the_others_within_a_second() {
    // No periodic re-read from Postgres: what arrives in time arrives through the feed.
    let (a, b, c, _) = three_replicas(&[("AUTHD_REVOCATION_RESYNC_INTERVAL", "1h")]).await;
    let introspector = a.introspector().await;
    a.register("ann").await;
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let tokens = a.login("ann", PASSWORD).await;
        assert!(b.is_active(&introspector, &tokens.access_token).await);
        assert!(c.is_active(&introspector, &tokens.access_token).await);
        a.auth()
            .logout(LogoutRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap();
        let waited = within(Duration::from_secs(5), || async {
            !b.is_active(&introspector, &tokens.access_token).await
                && !c.is_active(&introspector, &tokens.access_token).await
        })
        .await;
        latencies.push(waited);
    }
    let p99 = p99(latencies.clone());
    let max = latencies.iter().max().unwrap();
    eprintln!("logout propagation over 100 trials: p99 {p99:?}, max {max:?}");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    for replica in [&a, &b, &c] {
        assert!(
            !replica.log().contains("lost the revocation feed"),
            "the feed dropped while Redis was healthy"
        );
        assert_eq!(
            replica.metric("authd_revocation_feed_synced").await,
            Some(1.0),
            "answers came from the feed"
        );
    }

    // A rotated API key (no grace): the old secret stops and the new one works on every replica.
    let owner = a.login("ann", PASSWORD).await;
    let created = a
        .api_keys()
        .create_api_key(bearer(
            CreateApiKeyRequest {
                label: "svc".into(),
                scopes: vec!["tasks:read".into()],
                expires_at: None,
            },
            &owner.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(b.is_active(&introspector, &created.secret).await, "cached on B");
    let rotated = a
        .api_keys()
        .rotate_api_key(bearer(
            RotateApiKeyRequest {
                id: created.api_key.unwrap().id,
                grace_period: None,
            },
            &owner.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    for replica in [&b, &c] {
        within(Duration::from_secs(1), || async {
            !replica.is_active(&introspector, &created.secret).await
        })
        .await;
        assert!(replica.is_active(&introspector, &rotated.secret).await);
    }

    // ChangePassword on A ends the sessions opened on B, everywhere.
    let on_b = [b.login("ann", PASSWORD).await, b.login("ann", PASSWORD).await];
    let on_a = a.login("ann", PASSWORD).await;
    a.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a new and longer password".into(),
            },
            &on_a.access_token,
        ))
        .await
        .unwrap();
    for replica in [&a, &b, &c] {
        for session in &on_b {
            within(Duration::from_secs(1), || async {
                !replica.is_active(&introspector, &session.access_token).await
            })
            .await;
        }
        assert!(
            replica.is_active(&introspector, &on_a.access_token).await,
            "the caller's session stays"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_deliver_revocations_and_new_keys() {
    let (a, b, c, env) = three_replicas(&[("AUTHD_WATCH_HEARTBEAT_INTERVAL", "200ms")]).await;
    let introspector = a.introspector().await;
    let tokens = a.user("bea").await;

    let mut revocations = c
        .tokens()
        .watch_revocations(bearer(WatchRevocationsRequest::default(), &introspector))
        .await
        .unwrap()
        .into_inner();
    // Nothing is revoked yet: the snapshot is empty, and the stream is live from the marker on.
    let first = revocations.next().await.unwrap().unwrap();
    assert!(
        matches!(
            first.event,
            Some(watch_revocations_response::Event::SnapshotComplete(SnapshotComplete {
                revocations: 0,
                resumed: false,
                ..
            }))
        ),
        "{first:?}"
    );
    let started = Instant::now();
    a.auth()
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let message = revocations.next().await.unwrap().unwrap();
            if let Some(watch_revocations_response::Event::Revocation(event)) = message.event {
                return event;
            }
        }
    })
    .await
    .expect("the revocation reached C's stream within a second");
    eprintln!(
        "WatchRevocations on C heard of A's logout after {:?}",
        started.elapsed()
    );
    assert_eq!(event.kind(), RevocationKind::Session);
    assert_eq!(event.subject_id, tokens.session_id);
    assert!(!event.user_id.is_empty());
    // Heard once: the periodic re-read from Postgres (every second) does not repeat it.
    let repeats = tokio::time::timeout(Duration::from_millis(2500), async {
        let mut repeats = 0;
        while let Some(Ok(message)) = revocations.next().await {
            if let Some(watch_revocations_response::Event::Revocation(again)) = message.event {
                repeats += usize::from(again.subject_id == event.subject_id);
            }
        }
        repeats
    })
    .await
    .unwrap_or(0);
    assert_eq!(repeats, 0, "the same revocation was streamed twice");

    // Streams need the introspection scope.
    let user = a.user("cid").await;
    let denied = b
        .tokens()
        .watch_keys(bearer(WatchKeysRequest::default(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut keys = b
        .tokens()
        .watch_keys(bearer(WatchKeysRequest::default(), &introspector))
        .await
        .unwrap()
        .into_inner();
    let initial = keys.next().await.unwrap().unwrap();
    assert_eq!(initial.keys.len(), 1);
    assert!(!initial.heartbeat);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .args(["keys", "rotate"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = keys.next().await.unwrap().unwrap();
            if !message.heartbeat {
                return message;
            }
        }
    })
    .await
    .expect("WatchKeys delivered the new key set");
    assert_eq!(rotated.keys.len(), 2, "the new key, and the old one still published");
    assert!(rotated.jwks_json.contains(&initial.keys[0].kid));

    // A stream lasts only as long as its credential: revoke the key and the stream ends.
    let admin = a.admin().await;
    let keys_of_admin = a
        .api_keys()
        .list_api_keys(bearer(ListApiKeysRequest {}, &admin.access_token))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    a.api_keys()
        .revoke_api_key(bearer(
            RevokeApiKeyRequest {
                id: keys_of_admin[0].id.clone(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match keys.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status.code()),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ended after its key was revoked");
    assert_eq!(ended, Some(Code::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_holds_while_redis_is_down_and_the_feed_resumes_after() {
    let mut redis = PrivateRedis::start().await;
    let (_, database_url) = fresh_database().await;
    let mut env = deployment_env(&database_url, Some(&redis.url()));
    // No periodic re-read: after the outage, only the reload on resubscribing can bring B up to date.
    env.push(("AUTHD_REVOCATION_RESYNC_INTERVAL".into(), "1h".into()));
    let a = Replica::start(&env).await;
    let b = Replica::start(&env).await;
    a.await_feed(true, Duration::from_secs(10)).await;
    b.await_feed(true, Duration::from_secs(10)).await;
    let introspector = a.introspector().await;
    a.register("dan").await;
    let kept = a.login("dan", PASSWORD).await;
    let doomed = a.login("dan", PASSWORD).await;

    redis.stop();
    b.await_feed(false, Duration::from_secs(3)).await;
    // Logins still work, valid tokens stay valid, and a logout on A reaches B through Postgres.
    let fresh = a.login("dan", PASSWORD).await;
    assert!(b.is_active(&introspector, &fresh.access_token).await);
    a.auth()
        .logout(LogoutRequest {
            refresh_token: doomed.refresh_token.clone(),
        })
        .await
        .expect("logout works without Redis");
    let waited = within(Duration::from_millis(1500), || async {
        !b.is_active(&introspector, &doomed.access_token).await
    })
    .await;
    eprintln!("with Redis down, B saw A's logout after {waited:?}");
    assert!(b.is_active(&introspector, &kept.access_token).await);

    // Redis returns: the feed resumes by itself, and carries the next logout.
    redis.resume().await;
    a.await_feed(true, Duration::from_secs(10)).await;
    b.await_feed(true, Duration::from_secs(10)).await;
    // Back on the feed, B's view holds what was revoked during the outage.
    assert!(!b.is_active(&introspector, &doomed.access_token).await);
    a.auth()
        .logout(LogoutRequest {
            refresh_token: kept.refresh_token.clone(),
        })
        .await
        .unwrap();
    within(Duration::from_secs(1), || async {
        !b.is_active(&introspector, &kept.access_token).await
    })
    .await;
    assert!(b.is_active(&introspector, &fresh.access_token).await);
}

/// Postgres stops and returns, with Redis (feed synced) and without (single node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_never_fails_open_and_recovers() {
    let postgres = PrivatePostgres::start();
    let mut redis = PrivateRedis::start().await;
    for (mode, redis_url) in [("single node", None), ("with Redis", Some(redis.url()))] {
        let database_url = postgres
            .create_database(&format!("outage_{}", uuid::Uuid::new_v4().simple()))
            .await;
        let env = deployment_env(&database_url, redis_url.as_deref());
        let node = Replica::start(&env).await;
        node.await_feed(true, Duration::from_secs(10)).await;
        let introspector = node.introspector().await;
        node.register("eli").await;
        let valid = node.login("eli", PASSWORD).await;
        let revoked = node.login("eli", PASSWORD).await;
        node.auth()
            .logout(LogoutRequest {
                refresh_token: revoked.refresh_token.clone(),
            })
            .await
            .unwrap();
        // Used once before the outage so the key is cached, as a gateway's key would be.
        assert!(node.is_active(&introspector, &valid.access_token).await);

        postgres.stop();
        let login = node
            .auth()
            .login(LoginRequest {
                identifier: "eli".into(),
                password: PASSWORD.into(),
                device_name: None,
            })
            .await
            .unwrap_err();
        assert_eq!(login.code(), Code::Unavailable, "{mode}: {login:?}");
        within(Duration::from_secs(5), || async {
            matches!(node.health().await, Ok(ServingStatus::NotServing))
        })
        .await;
        for _ in 0..20 {
            match node
                .tokens()
                .introspect(bearer(
                    IntrospectRequest {
                        token: revoked.access_token.clone(),
                        token_type_hint: String::new(),
                    },
                    &introspector,
                ))
                .await
            {
                Ok(answer) => assert!(!answer.into_inner().active, "{mode}: a revoked token looked active"),
                Err(status) => assert_eq!(status.code(), Code::Unavailable, "{mode}"),
            }
        }
        // The view is current (single node, or synced through Redis): valid tokens still verify.
        assert!(node.is_active(&introspector, &valid.access_token).await, "{mode}");

        if redis_url.is_some() {
            // Redis gone too: nothing can prove the view current, so no answer is given.
            redis.stop();
            node.await_feed(false, Duration::from_secs(3)).await;
            let status = node
                .tokens()
                .introspect(bearer(
                    IntrospectRequest {
                        token: valid.access_token.clone(),
                        token_type_hint: String::new(),
                    },
                    &introspector,
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unavailable, "both stores down");
            redis.resume().await;
        }

        postgres.resume();
        within(Duration::from_secs(15), || async {
            node.auth()
                .login(LoginRequest {
                    identifier: "eli".into(),
                    password: PASSWORD.into(),
                    device_name: None,
                })
                .await
                .is_ok()
        })
        .await;
        within(Duration::from_secs(15), || async {
            matches!(node.health().await, Ok(ServingStatus::Serving))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_and_exits_zero() {
    let (_, database_url) = fresh_database().await;
    // With Redis, so that the feed's jobs are part of the shutdown too.
    let env = deployment_env(&database_url, Some(&shared_redis()));
    let mut node = Replica::start(&env).await;
    node.await_feed(true, Duration::from_secs(10)).await;
    let introspector = node.introspector().await;
    let tokens = node.user("fox").await;
    let signalled = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let client = node.client.clone();
            let (introspector, token) = (introspector.clone(), tokens.access_token.clone());
            let signalled = signalled.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed_in_flight) = (0u32, Vec::new());
                loop {
                    let started = Instant::now();
                    let result = client
                        .tokens()
                        .introspect(bearer(
                            IntrospectRequest {
                                token: token.clone(),
                                token_type_hint: String::new(),
                            },
                            &introspector,
                        ))
                        .await;
                    match result {
                        Ok(answer) => {
                            assert!(answer.into_inner().active);
                            ok += 1;
                        }
                        Err(status) => {
                            let sent_before_signal = signalled.lock().unwrap().is_none_or(|at| started < at);
                            if sent_before_signal {
                                failed_in_flight.push(status);
                            }
                            return (ok, failed_in_flight);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    *signalled.lock().unwrap() = Some(Instant::now());
    node.signal("TERM");
    let status = node.exit_status(Duration::from_secs(15)).await;
    let mut total = 0;
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(failed.is_empty(), "calls in flight at SIGTERM failed: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "the callers were busy ({total} calls)");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_healthy_a_valid_introspection_issues_no_database_query() {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Calls {
        #[diesel(sql_type = BigInt)]
        calls: i64,
    }
    let namespace = format!("authd-test-{}", uuid::Uuid::new_v4().simple());
    let redis = shared_redis();
    let mut overrides = vec![
        ("AUTHD_REDIS_URL", redis.as_str()),
        ("AUTHD_REDIS_NAMESPACE", namespace.as_str()),
    ];
    overrides.extend_from_slice(QUIET_BACKGROUND);
    let app = spawn_app_with(&overrides).await;
    within(Duration::from_secs(10), || async { app.app.revoker.feed().is_synced() }).await;
    // The feed stays up on its own (its liveness pings succeed).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        app.app.revoker.feed().is_synced(),
        "the feed dropped while Redis was healthy"
    );
    let introspector = app.introspector().await;
    let tokens = app.user("gil").await;
    assert!(app.is_active(&introspector, &tokens.access_token).await);
    let mut db = app.db().await;
    let count = async |db: &mut diesel_async::AsyncPgConnection| {
        diesel::sql_query(
            "SELECT COALESCE(SUM(calls), 0)::bigint AS calls FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT ILIKE '%pg_stat_statements%'",
        )
        .get_result::<Calls>(db)
        .await
        .unwrap()
        .calls
    };
    let before = count(&mut db).await;
    for _ in 0..25 {
        assert!(app.is_active(&introspector, &tokens.access_token).await);
    }
    assert_eq!(count(&mut db).await, before, "introspection queried the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_wide_revocation_reaches_every_replica_and_spares_later_logins() {
    let namespace = format!("authd-test-{}", uuid::Uuid::new_v4().simple());
    let redis = shared_redis();
    let overrides = [
        ("AUTHD_REDIS_URL", redis.as_str()),
        ("AUTHD_REDIS_NAMESPACE", namespace.as_str()),
    ];
    let a = spawn_app_with(&overrides).await;
    // A second replica on the same database and Redis.
    let b = {
        let application = authd::startup::Server::build(
            settings(&a.database_url, &overrides),
            authd::clock::Clock::system(),
            false,
        )
        .await
        .unwrap();
        let addr = application.local_addr();
        let app = application.app();
        tokio::spawn(application.run_until_stopped(std::future::pending()));
        (Client::connect(addr).await, app)
    };
    within(Duration::from_secs(10), || async {
        a.app.revoker.feed().is_synced() && b.1.revoker.feed().is_synced()
    })
    .await;
    let introspector = a.introspector().await;
    let user = a.register("hal").await;
    let tokens = a.login("hal", PASSWORD).await;
    let key = a.api_key(&tokens.access_token, &["tasks:read"]).await;
    assert!(b.0.is_active(&introspector, &key).await);
    a.app.revoker.revoke_user(user.id.parse().unwrap()).await.unwrap();
    within(Duration::from_secs(1), || async {
        !b.0.is_active(&introspector, &tokens.access_token).await && !b.0.is_active(&introspector, &key).await
    })
    .await;
    // A login right after the revocation (even within the same second) works everywhere.
    let later = a.login("hal", PASSWORD).await;
    assert!(b.0.is_active(&introspector, &later.access_token).await);
    assert!(a.is_active(&introspector, &later.access_token).await);
    // The deny entry is in Redis, expiring on its own.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{namespace}:revoked:user:{}", user.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "deny entry with a lifetime, got PTTL {ttl}");
    let session_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{namespace}:revoked:session:{}", tokens.session_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        session_ttl > 0 && session_ttl <= (15 * 60 + 120) * 1000,
        "PTTL {session_ttl}"
    );
}

#[tokio::test]
async fn single_session_mode_ends_every_other_session_at_login() {
    let app = spawn_app_with(&[("AUTHD_SINGLE_SESSION", "true")]).await;
    let introspector = app.introspector().await;
    app.register("ivo").await;
    let first = app.login("ivo", PASSWORD).await;
    let second = app.login("ivo", PASSWORD).await;
    assert!(!app.is_active(&introspector, &first.access_token).await);
    assert!(app.is_active(&introspector, &second.access_token).await);
}

#[tokio::test]
async fn a_missed_feed_message_is_caught_up_from_postgres() {
    // Two replicas that share no feed at all: only the periodic re-read can carry A's logout to B.
    let a = spawn_app_with(&[("AUTHD_REVOCATION_RESYNC_INTERVAL", "200ms")]).await;
    let b_app = authd::startup::Server::build(
        settings(&a.database_url, &[("AUTHD_REVOCATION_RESYNC_INTERVAL", "200ms")]),
        authd::clock::Clock::system(),
        false,
    )
    .await
    .unwrap();
    let b = Client::connect(b_app.local_addr()).await;
    tokio::spawn(b_app.run_until_stopped(std::future::pending()));
    let introspector = a.introspector().await;
    let tokens = a.user("ida").await;
    assert!(b.is_active(&introspector, &tokens.access_token).await);
    a.auth()
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    within(Duration::from_secs(2), || async {
        !b.is_active(&introspector, &tokens.access_token).await
    })
    .await;
}

/// `authd keys …` against the deployment's own settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_signing_key_stops_verifying_everywhere_within_a_second() {
    let (a, b, c, env) = three_replicas(&[]).await;
    let introspector = a.introspector().await;
    let old = a.user("kay").await;
    // An emergency rotation: the new key signs at once, the old one stays published.
    let rotated = keys_command(&env, &["rotate", "--now"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let listing = String::from_utf8(keys_command(&env, &["list"]).stdout).unwrap();
    let state_of = |listing: &str, state: &str| {
        listing
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(state))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let (retired, active) = (state_of(&listing, "retired"), state_of(&listing, "active"));
    assert_eq!((retired.len(), active.len()), (1, 1), "{listing}");
    for replica in [&a, &b, &c] {
        assert!(
            replica.is_active(&introspector, &old.access_token).await,
            "old tokens stay valid"
        );
    }
    // The key that signs now cannot be revoked.
    let refused = keys_command(&env, &["revoke", &active[0]]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("rotate --now"));

    let revoked = keys_command(&env, &["revoke", &retired[0]]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    for replica in [&a, &b, &c] {
        within(Duration::from_secs(1), || async {
            !replica.is_active(&introspector, &old.access_token).await
        })
        .await;
    }
    let fresh = c.login("kay", PASSWORD).await;
    assert!(a.is_active(&introspector, &fresh.access_token).await);
    let listing = String::from_utf8(keys_command(&env, &["list"]).stdout).unwrap();
    assert_eq!(state_of(&listing, "revoked"), retired, "{listing}");
}
