//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) signed with the active key. They are verified
//! under the rule set of `authd_client::verify` (security rule 3), with the ring's public keys.

use super::keys::KeyRing;
use crate::crypto::random_token;
use authd_client::TokenRules;
use chrono::{DateTime, Utc};
use jsonwebtoken::Header;
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

pub use authd_client::verify::{AccessClaims, LEEWAY_SECS, Rejection, check_times};

/// The `client_id` of tokens issued to end users through authd's own API.
pub const CLIENT_ID: &str = "authd";

/// Who the token is for, and for how long.
pub struct TokenRequest<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub session_id: Uuid,
    pub roles: &'a [String],
    pub scope: &'a str,
}

/// Issues and verifies access tokens for one issuer and audience.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

impl TokenIssuer {
    /// Signs a new access token with the key that signs at `now`; returns it with its claims.
    pub fn issue(
        &self,
        ring: &KeyRing,
        request: &TokenRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), super::keys::KeyError> {
        let iat = now.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: request.user_id.to_string(),
            aud: vec![self.audience.clone()],
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iat,
            nbf: iat,
            jti: random_token()[..22].to_string(),
            sid: request.session_id.to_string(),
            scope: request.scope.to_string(),
            roles: request.roles.to_vec(),
            client_id: CLIENT_ID.to_string(),
            username: request.username.to_string(),
        };
        let signer = ring.signer(now)?;
        let mut header = Header::new(signer.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &SingleAud(&claims), &signer.encoding_key)?;
        Ok((token, claims))
    }

    /// The rules tokens of this issuer are verified under (see [`authd_client::TokenRules`]).
    pub fn verifier(&self) -> TokenRules {
        TokenRules {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            max_lifetime: self.ttl,
        }
    }

    /// Verifies signature and claims with the ring's public keys. Revocation is the caller's
    /// next step.
    pub fn verify(&self, ring: &KeyRing, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, Rejection> {
        self.verifier().verify(&ring.keys, token, now)
    }
}

/// Serialises `aud` as a single string when there is one audience, as most libraries expect.
struct SingleAud<'a>(&'a AccessClaims);

impl Serialize for SingleAud<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
        if let [single] = self.0.aud.as_slice() {
            value["aud"] = serde_json::Value::String(single.clone());
        }
        value.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;
    use crate::secret::Secret;
    use crate::tokens::keys::{KeyRing, generate};
    use chrono::Duration as D;

    fn ring(alg: SigningAlg) -> KeyRing {
        let kek = Secret::new([1u8; 32]);
        KeyRing::from_rows(&[generate(&kek, alg, Utc::now()).unwrap()], &kek, Utc::now()).unwrap()
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer {
            issuer: "https://auth.example.com".into(),
            audience: "api".into(),
            ttl: Duration::from_secs(900),
        }
    }

    fn issue(ring: &KeyRing, now: DateTime<Utc>) -> String {
        let request = TokenRequest {
            user_id: Uuid::now_v7(),
            username: "u",
            session_id: Uuid::now_v7(),
            roles: &["user".to_string()],
            scope: "profile",
        };
        issuer().issue(ring, &request, now).unwrap().0
    }

    #[test]
    fn every_algorithm_round_trips() {
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256] {
            let ring = ring(alg);
            let now = Utc::now();
            let claims = issuer().verify(&ring, &issue(&ring, now), now).unwrap();
            assert_eq!(claims.exp - claims.iat, 900, "{alg:?}");
        }
    }

    #[test]
    fn a_token_longer_lived_than_tokens_are_issued_for_now_is_refused() {
        let ring = ring(SigningAlg::EdDsa);
        let now = Utc::now();
        let token = issue(&ring, now);
        let shorter = TokenIssuer {
            ttl: Duration::from_secs(300),
            ..issuer()
        };
        assert_eq!(shorter.verify(&ring, &token, now).unwrap_err(), Rejection::Expired);
        assert!(issuer().verify(&ring, &token, now).is_ok());
    }

    #[test]
    fn expiry_and_not_before_honour_the_leeway_and_no_more() {
        let ring = ring(SigningAlg::EdDsa);
        let now = Utc::now();
        let token = issue(&ring, now);
        let at = |secs: i64| issuer().verify(&ring, &token, now + D::seconds(secs));
        assert!(at(900 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(at(900 + LEEWAY_SECS).unwrap_err(), Rejection::Expired);
        assert!(at(-LEEWAY_SECS).is_ok());
        assert_eq!(at(-LEEWAY_SECS - 1).unwrap_err(), Rejection::NotYetValid);
    }

    #[test]
    fn issuer_audience_and_foreign_keys_are_enforced() {
        let ring = ring(SigningAlg::EdDsa);
        let now = Utc::now();
        let token = issue(&ring, now);
        let mut other = issuer();
        other.issuer = "https://evil.example.com".into();
        assert_eq!(other.verify(&ring, &token, now).unwrap_err(), Rejection::WrongIssuer);
        let mut other = issuer();
        other.audience = "another-api".into();
        assert_eq!(other.verify(&ring, &token, now).unwrap_err(), Rejection::WrongAudience);
        // A token from another deployment's key with the same settings: unknown kid.
        assert_eq!(
            issuer()
                .verify(&self::ring(SigningAlg::EdDsa), &token, now)
                .unwrap_err(),
            Rejection::UnknownKey
        );
        assert_eq!(issuer().verify(&ring, "a.b", now).unwrap_err(), Rejection::Malformed);
    }
}
