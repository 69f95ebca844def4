//! Micro-benchmarks of the primitives on authd's request paths: `cargo bench`.
//!
//! - `jwt`: signing and verifying an access token, for each algorithm authd can sign with.
//! - `argon2`: one argon2id hash at the configured parameters (AUTHD_ARGON2_*, else the defaults).
//! - `api_key`: parsing a presented key (shape and checksum) and hashing it for the look-up.
//! - `introspection`: the in-process part of `Introspect` for an access token (cache or signature,
//!   revocation view, the answer message), with 10 000 live revocations in the view.

// A benchmark reads the system clock directly.
#![allow(clippy::disallowed_methods)]

use authd::api_keys::format;
use authd::authn::{ActiveCredential, check_access_token};
use authd::config::SigningAlg;
use authd::revocation::{Revocation, RevocationKind, RevocationView};
use authd::secret::Secret;
use authd::tokens::jwt::TokenRequest;
use authd::tokens::keys::generate;
use authd::tokens::{KeyRing, TokenIssuer, VerifiedTokens};
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use uuid::Uuid;

fn ring(alg: SigningAlg) -> KeyRing {
    let kek = Secret::new([9u8; 32]);
    KeyRing::from_rows(&[generate(&kek, alg, Utc::now()).expect("key")], &kek, Utc::now()).expect("ring")
}

fn issuer() -> TokenIssuer {
    TokenIssuer {
        issuer: "https://auth.example.com".into(),
        audience: "authd".into(),
        ttl: Duration::from_secs(900),
    }
}

/// Claims the size of a real user's.
fn request(roles: &[String]) -> TokenRequest<'_> {
    TokenRequest {
        user_id: Uuid::now_v7(),
        username: "ada.lovelace",
        session_id: Uuid::now_v7(),
        roles,
        scope: "profile sessions:read api_keys:read",
    }
}

fn jwt(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt");
    let roles = ["user".to_string()];
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256] {
        let ring = ring(alg);
        let issuer = issuer();
        let request = request(&roles);
        let now = Utc::now();
        group.bench_function(BenchmarkId::new("sign", alg.as_str()), |b| {
            b.iter(|| issuer.issue(&ring, black_box(&request), now).expect("sign"))
        });
        let (token, _) = issuer.issue(&ring, &request, now).expect("sign");
        group.bench_function(BenchmarkId::new("verify", alg.as_str()), |b| {
            b.iter(|| issuer.verify(&ring, black_box(&token), now).expect("verify"))
        });
    }
    group.finish();
}

fn argon2(c: &mut Criterion) {
    let params = authd::config::argon2_params(None).expect("AUTHD_ARGON2_* settings");
    let mut group = c.benchmark_group("argon2");
    group.sample_size(10);
    let name = format!(
        "m={},t={},p={}",
        params.memory_kib, params.iterations, params.parallelism
    );
    group.bench_function(BenchmarkId::new("hash", name), |b| {
        b.iter(|| authd::accounts::hash_once(params, black_box("correct horse battery staple")).expect("hash"))
    });
    group.finish();
}

fn api_key(c: &mut Criterion) {
    let key = format::new_key(&format::new_prefix());
    let mut group = c.benchmark_group("api_key");
    group.bench_function("parse", |b| b.iter(|| format::parse(black_box(&key)).expect("valid")));
    group.bench_function("hash", |b| b.iter(|| authd::crypto::token_hash(black_box(&key))));
    group.finish();
}

fn introspection(c: &mut Criterion) {
    let ring = ring(SigningAlg::EdDsa);
    let issuer = issuer();
    let now = Utc::now();
    let view = RevocationView::default();
    for _ in 0..10_000 {
        view.apply(&Revocation {
            kind: RevocationKind::Session,
            subject_id: Uuid::now_v7().to_string(),
            user_id: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(15),
        });
    }
    let roles = ["user".to_string()];
    let (token, _) = issuer.issue(&ring, &request(&roles), now).expect("sign");
    let mut group = c.benchmark_group("introspection");
    for (name, cache) in [
        ("repeated token (cached)", VerifiedTokens::new(16_384)),
        ("distinct token (signature checked)", VerifiedTokens::new(0)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let claims = check_access_token(&issuer.verifier(), &ring, &cache, &view, black_box(&token), now)
                    .expect("active");
                authd::grpc::introspection(ActiveCredential::AccessToken(claims))
            })
        });
    }
    group.finish();
}

/// What exporting a call's server span costs the thread that serves it: started with the
/// attributes of a gRPC call, attached while the call is polled, given its status, ended (written
/// as OTLP protobuf and queued). The queue's sends, on a thread of their own, are not counted.
/// Run with a collector address, e.g. one where nobody listens:
/// `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9 RUST_LOG=off cargo bench --bench primitives -- telemetry`.
fn telemetry(c: &mut Criterion) {
    use opentelemetry::KeyValue;
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        eprintln!("telemetry: skipped (set OTEL_EXPORTER_OTLP_ENDPOINT to measure span export)");
        return;
    }
    let _guard = authd::telemetry::init(Some(authd::config::OtlpProtocol::Grpc)).expect("telemetry");
    let headers = http::HeaderMap::new();
    let call = |span: &authd::telemetry::spans::ServerSpan| {
        let _attached = span.context().map(|cx| cx.clone().attach());
        let _entered = span.log.enter();
        black_box(span);
    };
    let mut group = c.benchmark_group("telemetry");
    group.bench_function("log span only (export off)", |b| {
        b.iter(|| {
            let log = authd::call_log_span!("rpc");
            let _entered = log.enter();
            black_box(&log);
        })
    });
    group.bench_function("server span, exported", |b| {
        b.iter(|| {
            let attributes = vec![
                KeyValue::new("rpc.system.name", "grpc"),
                KeyValue::new("rpc.method", "auth.v1.TokenService/Introspect"),
                KeyValue::new("server.address", "127.0.0.1".to_string()),
                KeyValue::new("server.port", 50051_i64),
            ];
            let span = authd::telemetry::spans::ServerSpan::start(
                authd::call_log_span!("rpc"),
                "auth.v1.TokenService/Introspect",
                &headers,
                attributes,
            );
            call(&span);
            {
                let _attached = span.context().map(|cx| cx.clone().attach());
                authd::telemetry::spans::set_call_attribute(KeyValue::new("client.address", "127.0.0.1".to_string()));
            }
            span.set_attribute(KeyValue::new("rpc.response.status_code", "OK"));
            span.end();
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, argon2, api_key, introspection, telemetry);
criterion_main!(benches);
