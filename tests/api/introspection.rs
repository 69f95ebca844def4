use crate::helpers::*;
use authd::proto::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use tonic::Code;

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

pub async fn jwks(app: &TestApp) -> GetJwksResponse {
    app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner()
}

/// A compact JWS signed with `key` over the given header and claims, by hand.
fn sign(header: &Value, claims: &Value, key: &ed25519_dalek::SigningKey) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}

#[tokio::test]
async fn access_tokens_verify_independently_against_the_jwks() {
    let app = spawn_app().await;
    let user = app.register("uma").await;
    let tokens = app.login("uma", PASSWORD).await;
    let set = jwks(&app).await;
    let document: Value = serde_json::from_str(&set.jwks_json).unwrap();
    let keys = document["keys"].as_array().unwrap();
    assert_eq!(keys.len(), set.keys.len());
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "JWKS leaks {private}");
        }
    }
    let header = part(&tokens.access_token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    let kid = header["kid"].as_str().unwrap();
    let jwk = keys.iter().find(|k| k["kid"] == kid).expect("kid is in the JWKS");
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["use"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("sig"))
    );
    // Verify with ed25519-dalek directly: another implementation than the one that signed (aws-lc),
    // no jsonwebtoken, no authd code.
    let x: [u8; 32] = B64.decode(jwk["x"].as_str().unwrap()).unwrap().try_into().unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let (input, signature) = tokens.access_token.rsplit_once('.').unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&B64.decode(signature).unwrap()).unwrap();
    public
        .verify_strict(input.as_bytes(), &signature)
        .expect("signature verifies");
    let claims = part(&tokens.access_token, 1);
    assert_eq!(claims["iss"], "http://127.0.0.1:50051");
    assert_eq!(claims["aud"], "authd");
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["sid"], tokens.session_id.as_str());
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["exp"].as_i64().unwrap(), claims["iat"].as_i64().unwrap() + 900);
    assert_eq!(claims["roles"], json!(["user"]));
    assert_eq!(claims["client_id"], "authd");
    assert!(claims["scope"].is_string());
}

#[tokio::test]
async fn introspection_answers_rfc7662_for_live_tokens() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let user = app.register("val").await;
    let tokens = app.login("val", PASSWORD).await;
    let answer = app.introspect(&introspector, &tokens.access_token).await;
    let claims = part(&tokens.access_token, 1);
    assert!(answer.active);
    assert_eq!(answer.token_type, "access_token");
    assert_eq!(answer.sub, user.id);
    assert_eq!(answer.username, "val");
    assert_eq!(answer.aud, vec!["authd"]);
    assert_eq!(answer.iss, "http://127.0.0.1:50051");
    assert_eq!(answer.sid, tokens.session_id);
    assert_eq!(answer.jti, claims["jti"].as_str().unwrap());
    assert_eq!(answer.roles, vec!["user"]);
    assert_eq!(answer.exp, claims["exp"].as_i64().unwrap());
    assert_eq!(answer.iat, claims["iat"].as_i64().unwrap());
    assert_eq!(answer.nbf, claims["nbf"].as_i64().unwrap());
    assert_eq!(answer.client_id, "authd");
}

#[tokio::test]
async fn introspect_requires_a_credential_with_the_introspect_scope() {
    let app = spawn_app().await;
    let user = app.user("wes").await;
    let request = || IntrospectRequest {
        token: user.access_token.clone(),
        token_type_hint: String::new(),
    };
    let none = app.tokens().introspect(request()).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let plain = app
        .tokens()
        .introspect(bearer(request(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(plain.code(), Code::PermissionDenied);
    let bogus = app.tokens().introspect(bearer(request(), "garbage")).await.unwrap_err();
    assert_eq!(bogus.code(), Code::Unauthenticated);
    let key = app.introspector().await;
    assert!(app.introspect(&key, &user.access_token).await.active);
}

/// Adds a signing key to the test's database that signs `ahead` from now (as `authd keys
/// rotate` does); returns its kid and when it starts signing.
pub async fn rotate_key(app: &TestApp, ahead: std::time::Duration) -> (String, chrono::DateTime<chrono::Utc>) {
    let settings = settings(&app.database_url, &[]);
    let pool = authd::store::connect(&app.database_url, 1).await.unwrap();
    authd::tokens::keys::rotate(
        &pool,
        &settings.tokens.key_encryption_key,
        settings.tokens.signing_alg,
        app.clock.now(),
        ahead,
    )
    .await
    .unwrap()
}

/// Forgeries of a real token, and things that are not tokens at all: each must be refused.
pub fn forged_tokens(tokens: &TokenPair, set: &GetJwksResponse) -> Vec<(&'static str, String)> {
    let header = part(&tokens.access_token, 0);
    let claims = part(&tokens.access_token, 1);
    let kid = header["kid"].as_str().unwrap().to_string();
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let attacker_x = B64.encode(attacker.verifying_key().as_bytes());
    let mut admin_claims = claims.clone();
    admin_claims["roles"] = json!(["user", "admin"]);

    let alg_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(set.jwks_json.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let hs256_x = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.clone());
        let x = B64.decode(&set.keys[0].x).unwrap();
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&x).unwrap()).unwrap()
    };
    let other_key_our_kid = sign(&header, &claims, &attacker);
    let tampered = {
        let mut parts: Vec<String> = tokens.access_token.split('.').map(str::to_string).collect();
        parts[1] = B64.encode(admin_claims.to_string());
        parts.join(".")
    };
    let hostile_kids: Vec<String> = ["../../../../../dev/null", "' OR '1'='1", "", "\u{0}"]
        .iter()
        .map(|k| sign(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": k}), &claims, &attacker))
        .collect();
    let embedded_jwk = sign(
        &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid,
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": attacker_x}}),
        &admin_claims,
        &attacker,
    );
    let jku = sign(
        &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": "http://127.0.0.1:1/jwks"}),
        &claims,
        &attacker,
    );
    let wrong_typ = {
        let mut parts: Vec<String> = tokens.access_token.split('.').map(str::to_string).collect();
        let mut h = header.clone();
        h["typ"] = json!("JWT");
        parts[0] = B64.encode(h.to_string());
        parts.join(".")
    };

    let mut forged = vec![
        ("alg none", alg_none),
        ("HS256 keyed with the JWKS", hs256),
        ("HS256 keyed with the public key", hs256_x),
        ("another key under our kid", other_key_our_kid),
        ("tampered payload", tampered),
        ("embedded jwk header", embedded_jwk),
        ("jku header", jku),
        ("typ JWT", wrong_typ),
        ("refresh token", tokens.refresh_token.clone()),
        ("garbage", "abc.def.ghi".to_string()),
        ("not a token", "hello world".to_string()),
        ("empty", String::new()),
        ("huge", "a.".repeat(10_000)),
    ];
    forged.extend(hostile_kids.into_iter().map(|t| ("hostile kid", t)));

    forged
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_inactive_and_refused() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let tokens = app.user("xia").await;
    let forged = forged_tokens(&tokens, &jwks(&app).await);
    for (what, token) in &forged {
        let answer = app.introspect(&introspector, token).await;
        assert_eq!(
            answer,
            IntrospectResponse::default(),
            "{what}: inactive and nothing else"
        );
        // (A header over the transport's 16 KiB limit is refused before any handler runs.)
        if !token.is_empty() && token.len() < 8 * 1024 {
            assert_eq!(app.get_me_code(token).await, Code::Unauthenticated, "{what}");
        }
    }

    // Expired: move the server's clock past exp and the leeway.
    assert!(app.is_active(&introspector, &tokens.access_token).await);
    app.clock.advance(std::time::Duration::from_secs(900 + 61));
    assert_eq!(
        app.introspect(&introspector, &tokens.access_token).await,
        IntrospectResponse::default()
    );
    assert_eq!(app.get_me_code(&tokens.access_token).await, Code::Unauthenticated);
}

#[tokio::test]
async fn revoke_follows_rfc7009() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let tokens = app.user("yan").await;
    let other = app.user("zed").await;
    let revoke = |credential: String, token: String| {
        let mut client = app.tokens();
        async move {
            client
                .revoke(bearer(
                    RevokeRequest {
                        token,
                        token_type_hint: String::new(),
                    },
                    &credential,
                ))
                .await
        }
    };
    revoke(tokens.access_token.clone(), "unknown-token".into())
        .await
        .expect("OK for an unknown token");
    // Someone else's token: OK, and nothing happens.
    revoke(other.access_token.clone(), tokens.access_token.clone())
        .await
        .unwrap();
    assert!(app.is_active(&introspector, &tokens.access_token).await);
    revoke(tokens.access_token.clone(), tokens.access_token.clone())
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &tokens.access_token).await);
    // Revoking a refresh token ends its session.
    revoke(other.access_token.clone(), other.refresh_token.clone())
        .await
        .unwrap();
    assert!(!app.is_active(&introspector, &other.access_token).await);
}

#[tokio::test]
async fn es256_and_rs256_are_selectable() {
    for (alg, kty) in [("ES256", "EC"), ("RS256", "RSA")] {
        let app = spawn_app_with(&[("AUTHD_SIGNING_ALG", alg)]).await;
        let introspector = app.introspector().await;
        let tokens = app.user("abe").await;
        assert_eq!(part(&tokens.access_token, 0)["alg"], alg);
        let set = jwks(&app).await;
        assert_eq!(set.keys[0].kty, kty);
        assert_eq!(set.keys[0].alg, alg);
        assert!(app.is_active(&introspector, &tokens.access_token).await, "{alg}");
    }
}

#[tokio::test]
async fn a_rotated_key_is_published_before_it_signs_and_old_tokens_stay_valid() {
    let app = spawn_app().await;
    let introspector = app.introspector().await;
    let before = app.user("ben").await;
    let old_kid = part(&before.access_token, 0)["kid"].as_str().unwrap().to_string();
    let settings = settings(&app.database_url, &[]);
    let ahead = settings.tokens.key_publish_ahead;
    assert_eq!(ahead, std::time::Duration::from_secs(600), "the default publish-ahead");
    let (new_kid, signs_from) = rotate_key(&app, ahead).await;
    assert_ne!(new_kid, old_kid);
    assert!(
        signs_from >= app.clock.now() + chrono::Duration::seconds(590),
        "{signs_from}"
    );
    // Another replica on the same database, and this one once it reloads, publish both keys
    // at once and go on signing with the old one.
    let other = spawn_on(
        authd::startup::Server::build(settings.clone(), app.clock.clone(), true)
            .await
            .unwrap(),
    )
    .await;
    assert!(app.app.reload_keys().await, "the published set changed");
    for replica in [&app, &other] {
        let kids: Vec<String> = jwks(replica).await.keys.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, vec![new_kid.clone(), old_kid.clone()]);
        let fresh = replica.login("ben", PASSWORD).await;
        assert_eq!(part(&fresh.access_token, 0)["kid"], old_kid.as_str(), "not signing yet");
    }
    // Once the publish-ahead has passed, every replica signs with the new key; no reload needed.
    app.clock.advance(ahead + std::time::Duration::from_secs(1));
    for replica in [&app, &other] {
        let fresh = replica.login("ben", PASSWORD).await;
        assert_eq!(part(&fresh.access_token, 0)["kid"], new_kid.as_str());
        assert!(replica.is_active(&introspector, &fresh.access_token).await);
        assert!(
            replica.is_active(&introspector, &before.access_token).await,
            "old tokens verify"
        );
    }
    assert_eq!(jwks(&app).await.keys.len(), 2, "the retired key is still published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_schedule_once_across_replicas() {
    let overrides = [
        ("AUTHD_KEY_ROTATION_INTERVAL", "1h"),
        ("AUTHD_KEY_REFRESH_INTERVAL", "100ms"),
    ];
    let app = spawn_app_with(&overrides).await;
    let other = spawn_on(
        authd::startup::Server::build(settings(&app.database_url, &overrides), app.clock.clone(), true)
            .await
            .unwrap(),
    )
    .await;
    // Not due yet: both replicas check every 100 ms and make nothing.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) FROM signing_keys").await, 1);
    app.clock.advance(std::time::Duration::from_secs(2 * 3600));
    crate::cluster::within(std::time::Duration::from_secs(5), || async {
        jwks(&app).await.keys.len() == 2 && jwks(&other).await.keys.len() == 2
    })
    .await;
    // A few more rounds of both replicas' checks: still one new key, not signing yet.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) FROM signing_keys").await, 2);
    let published_ahead = "SELECT count(*) FROM signing_keys WHERE activates_at = created_at + interval '10 minutes'";
    assert_eq!(
        app.count(published_ahead).await,
        1,
        "published 10 minutes before it signs"
    );
}

#[tokio::test]
async fn a_valid_introspection_issues_no_database_query() {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Calls {
        #[diesel(sql_type = BigInt)]
        calls: i64,
    }
    let app = spawn_app_with(QUIET_BACKGROUND).await;
    let introspector = app.introspector().await;
    let tokens = app.user("cal").await;
    let user_key = {
        let created = app
            .api_keys()
            .create_api_key(bearer(
                CreateApiKeyRequest {
                    label: "k".into(),
                    scopes: vec!["tasks:read".into()],
                    expires_at: None,
                },
                &tokens.access_token,
            ))
            .await
            .unwrap();
        created.into_inner().secret
    };
    // Warm-up: the first use of each API key reads it once.
    assert!(app.is_active(&introspector, &tokens.access_token).await);
    assert!(app.is_active(&introspector, &user_key).await);
    let mut db = app.db().await;
    let count = async |db: &mut diesel_async::AsyncPgConnection| {
        let query = diesel::sql_query(
            "SELECT COALESCE(SUM(calls), 0)::bigint AS calls FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT ILIKE '%pg_stat_statements%'",
        );
        query.get_result::<Calls>(db).await.unwrap().calls
    };
    let before = count(&mut db).await;
    assert!(before > 0, "pg_stat_statements sees this database");
    for _ in 0..25 {
        assert!(app.is_active(&introspector, &tokens.access_token).await);
        assert!(app.is_active(&introspector, &user_key).await);
    }
    let after = count(&mut db).await;
    assert_eq!(after, before, "introspection queried the database");
    // And the counter does move when the server does touch the database.
    app.login("cal", PASSWORD).await;
    assert!(count(&mut db).await > after);
}

#[tokio::test]
async fn no_secret_reaches_the_log() {
    let app = spawn_app().await;
    let password = "log-canary-password-1";
    let new_password = "log-canary-password-2";
    app.auth()
        .register(RegisterRequest {
            email: "dee@example.com".into(),
            username: "dee".into(),
            password: password.into(),
        })
        .await
        .unwrap();
    let _ = app
        .auth()
        .login(LoginRequest {
            identifier: "dee".into(),
            password: "log-canary-wrong-3".into(),
            device_name: None,
        })
        .await;
    let tokens = app.login("dee", password).await;
    let rotated = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // A replay, which the server logs about.
    let _ = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await;
    let fresh = app.login("dee", password).await;
    let key = app.api_key(&fresh.access_token, &["tasks:read"]).await;
    let introspector = app.introspector().await;
    app.introspect(&introspector, &fresh.access_token).await;
    app.introspect(&introspector, &key).await;
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: password.into(),
                new_password: new_password.into(),
            },
            &fresh.access_token,
        ))
        .await
        .unwrap();
    let log = captured_log();
    assert!(log.contains("authd is serving gRPC"), "the log is being captured");
    let secrets = [
        password,
        new_password,
        "log-canary-wrong-3",
        ADMIN_PASSWORD,
        &tokens.access_token,
        &tokens.refresh_token,
        &rotated.access_token,
        &rotated.refresh_token,
        &fresh.access_token,
        &fresh.refresh_token,
        &key,
        &key[20..],
        &introspector,
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    // The signature part of a JWT alone must not appear either.
    let signature = fresh.access_token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature));
}

/// A repeated token is answered from the cache of verified tokens, and the cache never outlives
/// a revocation: after a logout the very same bytes introspect inactive.
#[tokio::test]
async fn a_cached_token_still_obeys_revocation() {
    let app = spawn_app().await;
    let tokens = app.user("cora").await;
    let gateway = app.introspector().await;
    let (hits_before, _) = app.app.authenticator.verified_tokens().hits_and_misses();
    for _ in 0..3 {
        assert!(app.introspect(&gateway, &tokens.access_token).await.active);
    }
    let (hits, _) = app.app.authenticator.verified_tokens().hits_and_misses();
    assert!(hits >= hits_before + 2, "a repeated token is answered from the cache");
    app.auth()
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    let answer = app.introspect(&gateway, &tokens.access_token).await;
    assert_eq!(answer, IntrospectResponse::default(), "revoked, though cached");
    let (hits_after, _) = app.app.authenticator.verified_tokens().hits_and_misses();
    assert!(
        hits_after > hits,
        "the revoked token was found in the cache, and refused"
    );
}
