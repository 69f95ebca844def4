//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) signed with the active key, and their verification
//! under an explicit rule set (security rule 3): only our algorithms, only our keys, every claim
//! enforced against our clock.

use super::keys::KeyRing;
use crate::crypto::random_token;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// How far `exp` and `nbf` may be off (security rule 3 allows at most 60 s).
pub const LEEWAY_SECS: i64 = 30;
/// Longer tokens are not ours; refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The `client_id` of tokens issued to end users through authd's own API.
pub const CLIENT_ID: &str = "authd";

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub sid: String,
    pub scope: String,
    pub roles: Vec<String>,
    pub client_id: String,
    /// The user's name when the token was issued, so introspection needs no look-up.
    pub username: String,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl AccessClaims {
    pub fn user_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.sub).ok()
    }

    pub fn session_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.sid).ok()
    }
}

/// Why a presented access token is not accepted. Never shown to callers in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a JWT")]
    Malformed,
    #[error("typ is not at+jwt")]
    WrongType,
    #[error("unknown kid")]
    UnknownKey,
    #[error("alg not allowed for this key")]
    WrongAlgorithm,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

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
    /// Signs a new access token with the active key; returns it with its claims.
    pub fn issue(
        &self,
        ring: &KeyRing,
        request: &TokenRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
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
        let mut header = Header::new(ring.active.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(ring.active.kid.clone());
        let token = jsonwebtoken::encode(&header, &SingleAud(&claims), &ring.active.encoding_key)?;
        Ok((token, claims))
    }

    /// Verifies signature and claims. Revocation is the caller's next step.
    pub fn verify(&self, ring: &KeyRing, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, Rejection> {
        self.verify_with_kid(ring, token, now).map(|(claims, _)| claims)
    }

    /// [`TokenIssuer::verify`], also naming the key that verified the token.
    pub fn verify_with_kid(
        &self,
        ring: &KeyRing,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(AccessClaims, String), Rejection> {
        if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Rejection::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        // We never issue these; a token carrying one is not ours (and they are never followed).
        if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(Rejection::Malformed);
        }
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(Rejection::WrongType);
        }
        let kid = header.kid.ok_or(Rejection::UnknownKey)?;
        let key = ring.verifiers.get(&kid).ok_or(Rejection::UnknownKey)?;
        if header.alg != key.alg || !matches!(key.alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256) {
            return Err(Rejection::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg);
        // Time, issuer and audience are checked below against our own clock and settings.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding_key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Rejection::BadSignature,
            _ => Rejection::Malformed,
        })?;
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(Rejection::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(Rejection::WrongAudience);
        }
        check_times(&claims, now)?;
        // A token may not live longer than tokens are issued for now: revocation entries are
        // kept that long, so one issued under a longer lifetime (before a lower
        // AUTHD_ACCESS_TOKEN_TTL) must not outlive them.
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        if claims.exp.saturating_sub(claims.iat) > ttl.saturating_add(LEEWAY_SECS) {
            return Err(Rejection::Expired);
        }
        if claims.user_id().is_none() || claims.session_id().is_none() {
            return Err(Rejection::Malformed);
        }
        Ok((claims, kid))
    }
}

/// Expiry and not-before, against our clock with [`LEEWAY_SECS`] of tolerance.
pub(crate) fn check_times(claims: &AccessClaims, now: DateTime<Utc>) -> Result<(), Rejection> {
    let now = now.timestamp();
    if claims.exp + LEEWAY_SECS <= now {
        return Err(Rejection::Expired);
    }
    if claims.nbf - LEEWAY_SECS > now || claims.iat - LEEWAY_SECS > now {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
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
        KeyRing::from_rows(&[generate(&kek, alg, Utc::now()).unwrap()], &kek).unwrap()
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
