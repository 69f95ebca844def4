//! Access-token verification against a fixed key ring. The first byte picks what the rest is:
//! 0, a whole token; 1, a header (JSON) with valid claims and signature; 2, claims (JSON) signed
//! with the ring's own key, so claim parsing past the signature check is reached too. Never
//! panics, and nothing is accepted that breaks the rules (typ, kid, alg, iss, aud, times).
#![no_main]

use authd::config::SigningAlg;
use authd::secret::Secret;
use authd::tokens::keys::{KeyRing, generate};
use authd::tokens::{AccessClaims, TokenIssuer};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

struct Fixture {
    ring: KeyRing,
    issuer: TokenIssuer,
    now: DateTime<Utc>,
    /// A valid token: header, claims, signature.
    parts: [String; 3],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let kek = Secret::new([5u8; 32]);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ring = KeyRing::from_rows(&[generate(&kek, SigningAlg::EdDsa, now).unwrap()], &kek, now).unwrap();
        let issuer = TokenIssuer {
            issuer: "https://auth.example.com".into(),
            audience: "api".into(),
            ttl: Duration::from_secs(900),
        };
        let request = authd::tokens::jwt::TokenRequest {
            user_id: uuid_from(1),
            username: "fuzz",
            session_id: uuid_from(2),
            roles: &[],
            scope: "profile",
        };
        let (token, _) = issuer.issue(&ring, &request, now).unwrap();
        let mut parts = token.split('.').map(str::to_string);
        let parts = [parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap()];
        Fixture {
            ring,
            issuer,
            now,
            parts,
        }
    })
}

fn uuid_from(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([n; 16])
}

fn b64(bytes: &[u8]) -> String {
    authd::crypto::b64url(bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => format!("{}.{}.{}", b64(rest), f.parts[1], f.parts[2]),
        _ => {
            let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            let mut header = jsonwebtoken::Header::new(f.ring.signers[0].key.alg);
            header.typ = Some("at+jwt".into());
            header.kid = Some(f.ring.signers[0].key.kid.clone());
            let Ok(token) = jsonwebtoken::encode(&header, &claims, &f.ring.signers[0].key.encoding_key) else {
                return;
            };
            token
        }
    };
    if let Ok(claims) = f.issuer.verify(&f.ring, &token, f.now) {
        check(&f.issuer, &claims, f.now);
    }
});

/// What an accepted token must satisfy, whatever its bytes.
fn check(issuer: &TokenIssuer, claims: &AccessClaims, now: DateTime<Utc>) {
    let leeway = authd::tokens::jwt::LEEWAY_SECS;
    assert_eq!(claims.iss, issuer.issuer);
    assert!(claims.aud.contains(&issuer.audience));
    assert!(claims.exp + leeway > now.timestamp());
    assert!(claims.nbf - leeway <= now.timestamp());
    assert!(claims.user_id().is_some() && claims.session_id().is_some());
    let longest = i64::try_from(issuer.ttl.as_secs()).unwrap();
    assert!(
        claims.exp - claims.iat <= longest + leeway,
        "a lifetime longer than tokens are issued for"
    );
}
