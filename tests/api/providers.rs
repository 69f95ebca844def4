//! Sign in with an OpenID provider, against a real provider served inside the test: an HTTP
//! server with a discovery document and a JWKS that can rotate, and ID tokens signed with RS256
//! and ES256 by a real JWT library.

use crate::helpers::*;
use authd::proto::*;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tonic::Code;
use tonic_types::StatusExt;

const CLIENT_ID: &str = "authd-web";

/// A key the provider signs with.
#[derive(Clone)]
struct ProviderKey {
    kid: String,
    alg: jsonwebtoken::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl ProviderKey {
    fn rsa(kid: &str) -> Self {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: Pkcs8V1Der<'static> = key.as_der().unwrap();
        let pkcs1 = authd::crypto::pkcs8_private_key(pkcs8.as_ref()).unwrap();
        let public = aws_lc_rs::signature::KeyPair::public_key(&key);
        let n = B64.encode(public.modulus().big_endian_without_leading_zero());
        let e = B64.encode(public.exponent().big_endian_without_leading_zero());
        Self {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::RS256,
            encoding: jsonwebtoken::EncodingKey::from_rsa_der(pkcs1),
            // No `alg`, as some providers publish them.
            jwk: json!({"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": e}),
        }
    }

    fn ec(kid: &str) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        // The uncompressed point: 0x04, x, y.
        let point = key.public_key().as_ref().to_vec();
        let der = key.to_pkcs8v1().unwrap();
        Self {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(der.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
                        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

#[derive(Default)]
struct Published {
    keys: Mutex<Vec<ProviderKey>>,
    issuer: Mutex<String>,
    jwks_fetches: AtomicUsize,
}

/// The OpenID provider of a test.
struct Idp {
    issuer: String,
    published: Arc<Published>,
    server: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start(keys: Vec<ProviderKey>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let published = Arc::new(Published::default());
        *published.keys.lock().unwrap() = keys;
        *published.issuer.lock().unwrap() = issuer.clone();
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(p): State<Arc<Published>>| async move {
                    let issuer = p.issuer.lock().unwrap().clone();
                    let body = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
                    ([("content-type", "application/json")], body.to_string())
                }),
            )
            .route(
                "/jwks",
                get(|State(p): State<Arc<Published>>| async move {
                    p.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    let keys: Vec<Value> = p.keys.lock().unwrap().iter().map(|k| k.jwk.clone()).collect();
                    let headers = [
                        ("content-type", "application/json"),
                        ("cache-control", "public, max-age=600"),
                    ];
                    (headers, json!({ "keys": keys }).to_string())
                }),
            )
            .with_state(published.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            issuer,
            published,
            server,
        }
    }

    fn key(&self, i: usize) -> ProviderKey {
        self.published.keys.lock().unwrap()[i].clone()
    }

    fn publish(&self, keys: Vec<ProviderKey>) {
        *self.published.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of an ID token for `sub` with `email`, verified or not.
    fn claims(&self, sub: &str, email: &str, verified: bool) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.issuer, "sub": sub, "aud": CLIENT_ID, "exp": now + 600, "iat": now,
               "email": email, "email_verified": verified})
    }

    fn token(&self, sub: &str, email: &str, verified: bool) -> String {
        self.key(0).sign(&self.claims(sub, email, verified))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn provider_env(name: &str, idp: &Idp, trust_email: bool) -> Vec<(String, String)> {
    let upper = name.to_ascii_uppercase();
    vec![
        (format!("AUTHD_OIDC_{upper}_ISSUER"), idp.issuer.clone()),
        (
            format!("AUTHD_OIDC_{upper}_CLIENT_IDS"),
            format!("other-app,{CLIENT_ID}"),
        ),
        (format!("AUTHD_OIDC_{upper}_TRUST_EMAIL"), trust_email.to_string()),
    ]
}

async fn app_with(providers: &[(&str, &Idp, bool)]) -> TestApp {
    let mut env: Vec<(String, String)> = providers
        .iter()
        .flat_map(|(n, idp, t)| provider_env(n, idp, *t))
        .collect();
    let names: Vec<&str> = providers.iter().map(|(n, _, _)| *n).collect();
    env.push(("AUTHD_OIDC_PROVIDERS".into(), names.join(",")));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(&pairs).await
}

async fn sign_in(app: &TestApp, provider: &str, id_token: &str) -> Result<LoginWithProviderResponse, tonic::Status> {
    app.auth()
        .login_with_provider(LoginWithProviderRequest {
            provider: provider.into(),
            id_token: id_token.into(),
            device_name: Some("phone".into()),
            nonce: None,
        })
        .await
        .map(|r| r.into_inner())
}

fn link_required(status: &tonic::Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status
            .get_details_error_info()
            .is_some_and(|info| info.reason == "ACCOUNT_LINK_REQUIRED")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sign_in_makes_an_account_that_later_sign_ins_find() {
    let idp = Idp::start(vec![ProviderKey::rsa("r1")]).await;
    let app = app_with(&[("corp", &idp, true)]).await;
    let listed = app
        .auth()
        .list_providers(ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.providers.len(), 1);
    assert_eq!(
        (listed.providers[0].name.as_str(), listed.providers[0].issuer.as_str()),
        ("corp", idp.issuer.as_str())
    );

    let first = sign_in(&app, "corp", &idp.token("sub-1", "Pat@Example.com", true))
        .await
        .unwrap();
    assert!(first.created);
    let user = first.user.unwrap();
    assert_eq!(user.email, "Pat@Example.com");
    assert!(user.email_verified, "the trusted provider vouched for the address");
    let tokens = first.tokens.unwrap();
    assert_eq!(app.me(&tokens.access_token).await.id, user.id);

    // Again, and after the address changed at the provider: the same account.
    let again = sign_in(&app, "corp", &idp.token("sub-1", "Pat@Example.com", true))
        .await
        .unwrap();
    assert!(!again.created);
    let moved = sign_in(&app, "corp", &idp.token("sub-1", "pat@new.example", false))
        .await
        .unwrap();
    assert_eq!(
        moved.user.unwrap().id,
        user.id,
        "the identity is (issuer, sub), never the email"
    );

    // The session is like any other: it refreshes, is listed and revoked.
    let refreshed = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let sessions = app
        .sessions()
        .list_sessions(bearer(ListSessionsRequest::default(), &refreshed.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    app.auth()
        .logout(bearer(LogoutRequest::default(), &refreshed.access_token))
        .await
        .unwrap();
    assert_eq!(app.get_me_code(&refreshed.access_token).await, Code::Unauthenticated);

    // The account has no password: a password login fails like a wrong password, and however
    // often, it does not lock the owner out of signing in with the provider.
    for _ in 0..6 {
        let password = app
            .auth()
            .login(LoginRequest {
                identifier: user.username.clone(),
                password: "any password at all".into(),
                device_name: None,
            })
            .await
            .unwrap_err();
        assert_eq!(password.code(), Code::Unauthenticated);
    }
    sign_in(&app, "corp", &idp.token("sub-1", "pat@new.example", true))
        .await
        .unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE type = 'user.registered'")
            .await,
        1,
        "this account, made once"
    );
    // The device of the sign-in that made the account is its own; another one is news.
    let new_devices = "SELECT count(*) FROM audit_events WHERE type = 'login.new_device'";
    assert_eq!(app.count(new_devices).await, 0);
    let mut request = tonic::Request::new(LoginWithProviderRequest {
        provider: "corp".into(),
        id_token: idp.token("sub-1", "pat@new.example", true),
        device_name: None,
        nonce: None,
    });
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    request.metadata_mut().insert("user-agent", firefox.parse().unwrap());
    app.auth().login_with_provider(request).await.unwrap();
    assert_eq!(app.count(new_devices).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_that_do_not_verify_are_unauthenticated() {
    let idp = Idp::start(vec![ProviderKey::ec("e1")]).await;
    let app = app_with(&[("corp", &idp, true)]).await;
    let key = idp.key(0);
    let claims = |extra: Value| {
        let mut c = idp.claims("sub-2", "lee@example.com", true);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let now = chrono::Utc::now().timestamp();
    let foreign = ProviderKey::ec("e1"); // the published kid, another key
    let alg_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "kid": "e1"}).to_string()),
        B64.encode(claims(json!({})).to_string())
    );
    let cases = [
        ("wrong aud", key.sign(&claims(json!({"aud": "someone-else"})))),
        ("wrong iss", key.sign(&claims(json!({"iss": "https://evil.example"})))),
        ("expired", key.sign(&claims(json!({"exp": now - 120})))),
        ("issued in the future", key.sign(&claims(json!({"iat": now + 300})))),
        ("foreign key, our kid", foreign.sign(&claims(json!({})))),
        ("alg none", alg_none),
        ("garbage", "abc.def.ghi".into()),
        ("not a token", "hello".into()),
    ];
    for (what, token) in &cases {
        let status = sign_in(&app, "corp", token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    // The nonce: as sent, or its SHA-256 (Apple's native flow); another one is refused.
    let with_nonce = |token: String, nonce: &str| LoginWithProviderRequest {
        provider: "corp".into(),
        id_token: token,
        device_name: None,
        nonce: Some(nonce.into()),
    };
    let raw = key.sign(&claims(json!({"nonce": "n-1"})));
    let err = app
        .auth()
        .login_with_provider(with_nonce(raw.clone(), "n-2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(app.auth().login_with_provider(with_nonce(raw, "n-1")).await.is_ok());
    use sha2::Digest;
    let hashed: String = sha2::Sha256::digest(b"n-3")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let apple = key.sign(&claims(json!({"nonce": hashed})));
    assert!(app.auth().login_with_provider(with_nonce(apple, "n-3")).await.is_ok());
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE type = 'user.registered'")
            .await,
        1,
        "one account, made by the first token that verified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_address_links_only_when_both_sides_verified_it() {
    let trusted = Idp::start(vec![ProviderKey::rsa("t1")]).await;
    let untrusted = Idp::start(vec![ProviderKey::ec("u1")]).await;
    let app = app_with(&[("corp", &trusted, true), ("multi", &untrusted, false)]).await;
    let local = app
        .auth()
        .register(RegisterRequest {
            email: "quin@example.com".into(),
            username: "quin".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    // The local address is not verified yet: nothing links, whatever the provider says.
    let status = sign_in(&app, "corp", &trusted.token("t-1", "quin@example.com", true))
        .await
        .unwrap_err();
    assert!(link_required(&status), "{status:?}");
    {
        use diesel_async::RunQueryDsl;
        let mut db = app.db().await;
        diesel::sql_query("UPDATE users SET email_verified = true WHERE username = 'quin'")
            .execute(&mut db)
            .await
            .unwrap();
    }
    // An unverified address at the provider, or a provider not trusted for email: no link.
    let status = sign_in(&app, "corp", &trusted.token("t-1", "quin@example.com", false))
        .await
        .unwrap_err();
    assert!(link_required(&status), "{status:?}");
    let status = sign_in(&app, "multi", &untrusted.token("m-1", "quin@example.com", true))
        .await
        .unwrap_err();
    assert!(link_required(&status), "{status:?}");
    // Both sides verified, trusted provider: linked, and signed in to the same account.
    let linked = sign_in(&app, "corp", &trusted.token("t-1", "quin@example.com", true))
        .await
        .unwrap();
    assert!(!linked.created);
    assert_eq!(linked.user.unwrap().id, local.id);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE type = 'provider.linked'")
            .await,
        1
    );
    // An address nobody vouches for is never claimed for an identity, with or without an
    // account behind it (the answer is the same either way): no account is made.
    let users = app.count("SELECT count(*) FROM users").await;
    let status = sign_in(&app, "multi", &untrusted.token("m-2", "new@example.com", true))
        .await
        .unwrap_err();
    assert!(link_required(&status), "{status:?}");
    let status = sign_in(&app, "corp", &trusted.token("t-2", "new@example.com", false))
        .await
        .unwrap_err();
    assert!(link_required(&status), "{status:?}");
    assert_eq!(app.count("SELECT count(*) FROM users").await, users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_rotate_and_unknown_kids_cost_little() {
    let idp = Idp::start(vec![ProviderKey::rsa("r1")]).await;
    let app = app_with(&[("corp", &idp, true)]).await;
    sign_in(&app, "corp", &idp.token("sub-3", "ray@example.com", true))
        .await
        .unwrap();
    assert_eq!(idp.fetches(), 1);
    // The provider rotates: a token of the new key is accepted (one refetch).
    let old = idp.key(0);
    idp.publish(vec![ProviderKey::ec("e2"), old]);
    sign_in(&app, "corp", &idp.token("sub-3", "ray@example.com", true))
        .await
        .unwrap();
    assert_eq!(idp.fetches(), 2);
    // A flood of made-up kids: refused, and the provider is asked again at most once in 30 s.
    let bogus = ProviderKey::ec("bogus");
    for i in 0..20 {
        let mut key = bogus.clone();
        key.kid = format!("bogus-{i}");
        let status = sign_in(&app, "corp", &key.sign(&idp.claims("sub-3", "ray@example.com", true)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert!(idp.fetches() <= 3, "{} JWKS fetches for 20 unknown kids", idp.fetches());

    // A provider that cannot be reached is UNAVAILABLE, not UNAUTHENTICATED.
    let gone = Idp::start(vec![ProviderKey::ec("g1")]).await;
    let token = gone.token("sub-4", "sam@example.com", true);
    let app = app_with(&[("gone", &gone, true)]).await;
    drop(gone);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let status = sign_in(&app, "gone", &token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_links_and_unlinks_a_provider() {
    let idp = Idp::start(vec![ProviderKey::ec("e1")]).await;
    let app = app_with(&[("corp", &idp, true)]).await;
    app.register("rae").await;
    let rae = app.login("rae", PASSWORD).await;
    let link = |id_token: String, password: Option<&str>| LinkProviderRequest {
        provider: "corp".into(),
        id_token,
        nonce: None,
        current_password: password.map(str::to_string),
    };
    let token = idp.token("rae-at-corp", "rae.elsewhere@example.com", false);
    // The account's owner proves it again: a stolen access token alone links nothing.
    for password in [None, Some("not the password")] {
        let err = app
            .auth()
            .link_provider(bearer(link(token.clone(), password), &rae.access_token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let key = app.api_key(&rae.access_token, &[]).await;
    let err = app
        .auth()
        .link_provider(bearer(link(token.clone(), Some(PASSWORD)), &key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "an API key manages no account");
    app.auth()
        .link_provider(bearer(link(token.clone(), Some(PASSWORD)), &rae.access_token))
        .await
        .unwrap();
    assert_eq!(app.me(&rae.access_token).await.linked_providers, vec!["corp"]);
    // One identity per provider: a second one is refused, and the first stays.
    let second = idp.token("rae-again", "rae.second@example.com", false);
    let err = app
        .auth()
        .link_provider(bearer(link(second, Some(PASSWORD)), &rae.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("unlink it first"), "{err:?}");
    assert_eq!(app.me(&rae.access_token).await.linked_providers, vec!["corp"]);
    // Linked: the identity signs in to this account, whatever address the provider shows.
    let signed_in = sign_in(&app, "corp", &token).await.unwrap();
    assert_eq!(signed_in.user.unwrap().username, "rae");

    // Nobody else can take it.
    app.register("sol").await;
    let sol = app.login("sol", PASSWORD).await;
    let err = app
        .auth()
        .link_provider(bearer(link(token.clone(), Some(PASSWORD)), &sol.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Unlinked: the identity no longer finds the account.
    app.auth()
        .unlink_provider(bearer(
            UnlinkProviderRequest {
                provider: "corp".into(),
            },
            &rae.access_token,
        ))
        .await
        .unwrap();
    assert!(app.me(&rae.access_token).await.linked_providers.is_empty());
    let status = sign_in(&app, "corp", &token).await.unwrap_err();
    assert!(link_required(&status), "{status:?}");
    // Not even when that identity shows the account's own address, verified on both sides: an
    // identity its account unlinked comes back only through LinkProvider.
    {
        use diesel_async::RunQueryDsl;
        let mut db = app.db().await;
        diesel::sql_query("UPDATE users SET email_verified = true WHERE username = 'rae'")
            .execute(&mut db)
            .await
            .unwrap();
    }
    let same_address = idp.token("rae-at-corp", "rae@example.com", true);
    let status = sign_in(&app, "corp", &same_address).await.unwrap_err();
    assert!(link_required(&status), "{status:?}");
    let err = app
        .auth()
        .unlink_provider(bearer(
            UnlinkProviderRequest {
                provider: "corp".into(),
            },
            &rae.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An account made by a provider keeps its only way in.
    let made = sign_in(&app, "corp", &idp.token("new-at-corp", "uma@example.com", true))
        .await
        .unwrap();
    let tokens = made.tokens.unwrap();
    let err = app
        .auth()
        .unlink_provider(bearer(
            UnlinkProviderRequest {
                provider: "corp".into(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(made.user.unwrap().linked_providers, vec!["corp"]);
}
