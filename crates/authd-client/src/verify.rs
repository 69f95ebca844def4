//! Access tokens and the rules they are verified under (security rule 3), in one place: only the
//! algorithms authd signs with, only keys of the given [`KeySet`] (`kid` is only a map key; `jku`,
//! `x5u`, `jwk` and `x5c` headers refuse the token), `typ: at+jwt`, and `iss`, `aud`, `exp`, `nbf`
//! and `iat` enforced against the caller's clock with [`LEEWAY_SECS`] of tolerance.

use crate::keys::KeySet;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// How far `exp` and `nbf` may be off (security rule 3 allows at most 60 s).
pub const LEEWAY_SECS: i64 = 30;
/// Longer tokens are not authd's; refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// `iss`: who issued the token (authd's configured issuer).
    pub iss: String,
    /// `sub`: the user's id (a UUID).
    pub sub: String,
    /// `aud`: the audiences; a single string is read as a list of one.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// `exp`: expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// `iat`: issue time, in seconds since the Unix epoch.
    pub iat: i64,
    /// `nbf`: not valid before, in seconds since the Unix epoch.
    pub nbf: i64,
    /// `jti`: the token's own id, what a token revocation names.
    pub jti: String,
    /// `sid`: the id (a UUID) of the session the token was issued in.
    pub sid: String,
    /// `scope`: the granted scopes, separated by spaces.
    pub scope: String,
    /// `roles`: the user's role names when the token was issued.
    pub roles: Vec<String>,
    /// `client_id`: the client the token was issued to (`authd` for authd's own API).
    pub client_id: String,
    /// The user's name when the token was issued, so introspection needs no look-up.
    pub username: String,
}

pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
    /// `sub` as a user id; `None` if it is not a UUID.
    pub fn user_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.sub).ok()
    }

    /// `sid` as a session id; `None` if it is not a UUID.
    pub fn session_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.sid).ok()
    }
}

/// Why a presented credential is not accepted. Never shown to callers in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a JWT of the expected shape (or carrying a header authd never issues).
    #[error("not a JWT")]
    Malformed,
    /// The header's `typ` is not `at+jwt`.
    #[error("typ is not at+jwt")]
    WrongType,
    /// No published key has the token's `kid`.
    #[error("unknown kid")]
    UnknownKey,
    /// The header's `alg` is not the one its key signs with.
    #[error("alg not allowed for this key")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// Past `exp` (or issued with a longer lifetime than the issuer allows).
    #[error("expired")]
    Expired,
    /// Before `nbf` or `iat`.
    #[error("not yet valid")]
    NotYetValid,
    /// The credential was revoked (its session, its user, the token or the API key).
    #[error("revoked")]
    Revoked,
    /// authd answered that the credential is not active (introspection).
    #[error("not active")]
    Inactive,
    /// Revocation cannot be proven: the verifier's view is stale and authd cannot be asked.
    /// Fail closed, and tell the caller to retry (gRPC `UNAVAILABLE`, HTTP 503).
    #[error("authd cannot be reached to prove the credential is not revoked")]
    Unavailable,
}

/// Verifies access tokens of one issuer for one audience.
#[derive(Clone, Debug)]
pub struct TokenRules {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The audience a token's `aud` must include.
    pub audience: String,
    /// The longest lifetime (`exp - iat`) a token may have: the issuer's configured lifetime.
    /// Revocation entries are kept that long, so a token issued under a longer lifetime (before
    /// it was lowered) must not outlive them.
    pub max_lifetime: Duration,
}

impl TokenRules {
    /// Verifies signature and claims. Revocation is the caller's next step.
    pub fn verify(&self, keys: &KeySet, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, Rejection> {
        self.verify_with_kid(keys, token, now).map(|(claims, _)| claims)
    }

    /// [`TokenRules::verify`], also naming the key that verified the token.
    pub fn verify_with_kid(
        &self,
        keys: &KeySet,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(AccessClaims, String), Rejection> {
        let header = plain_header(token, MAX_TOKEN_LEN).ok_or(Rejection::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(Rejection::WrongType);
        }
        let kid = header.kid.ok_or(Rejection::UnknownKey)?;
        let key = keys.get(&kid).ok_or(Rejection::UnknownKey)?;
        if header.alg != key.alg || !matches!(key.alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256) {
            return Err(Rejection::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg);
        // Time, issuer and audience are checked below against the caller's clock and settings.
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
        if !self.lifetime_allowed(&claims) {
            return Err(Rejection::Expired);
        }
        if claims.user_id().is_none() || claims.session_id().is_none() {
            return Err(Rejection::Malformed);
        }
        Ok((claims, kid))
    }
}

impl TokenRules {
    /// Whether claims already verified once fit this verifier: its issuer, its audience, and a
    /// lifetime it allows (times are checked separately, against the clock).
    pub fn accepts_claims(&self, claims: &AccessClaims) -> bool {
        claims.iss == self.issuer && claims.aud.contains(&self.audience) && self.lifetime_allowed(claims)
    }

    fn lifetime_allowed(&self, claims: &AccessClaims) -> bool {
        let longest = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        claims.exp.saturating_sub(claims.iat) <= longest.saturating_add(LEEWAY_SECS)
    }
}

/// The header of a JWT of at most `max_len` bytes in three parts, unless it carries a header
/// that points elsewhere for its key (`jku`, `jwk`, `x5u`, `x5c`): neither authd nor the
/// providers it trusts send those, and they are never followed.
pub(crate) fn plain_header(token: &str, max_len: usize) -> Option<jsonwebtoken::Header> {
    if token.len() > max_len || token.bytes().filter(|b| *b == b'.').count() != 2 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    let points_elsewhere = header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() || header.x5c.is_some();
    (!points_elsewhere).then_some(header)
}

/// Expiry and not-before, against the caller's clock with [`LEEWAY_SECS`] of tolerance.
pub fn check_times(claims: &AccessClaims, now: DateTime<Utc>) -> Result<(), Rejection> {
    let now = now.timestamp();
    if claims.exp + LEEWAY_SECS <= now {
        return Err(Rejection::Expired);
    }
    if claims.nbf - LEEWAY_SECS > now || claims.iat - LEEWAY_SECS > now {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Signer;
    use base64::Engine;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The token with its header replaced (the signature then no longer matters: each of these
    /// must be refused before it is checked, or by it).
    fn with_header(token: &str, header: &str) -> String {
        let (_, rest) = token.split_once('.').unwrap();
        format!("{}.{rest}", b64(header))
    }

    #[test]
    fn the_rule_set_refuses_what_authd_never_issues() {
        let signer = Signer::new();
        let (verifier, keys) = (signer.verifier(), signer.keys());
        let now = Utc::now();
        let token = signer.token(now);
        assert!(verifier.verify(&keys, &token, now).is_ok());
        let kid = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(kid).unwrap()).unwrap();
        let kid = header["kid"].as_str().unwrap();
        let refused = |header: String| verifier.verify(&keys, &with_header(&token, &header), now).unwrap_err();
        assert_eq!(
            refused(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#)),
            Rejection::WrongType
        );
        assert_eq!(
            refused(format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#)),
            Rejection::WrongAlgorithm
        );
        assert_eq!(
            refused(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#)),
            Rejection::Malformed
        );
        assert_eq!(
            refused(format!(
                r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","jku":"https://evil.example/jwks"}}"#
            )),
            Rejection::Malformed
        );
        assert_eq!(
            refused(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"someone-else"}"#.into()),
            Rejection::UnknownKey
        );
        assert_eq!(
            refused(r#"{"alg":"EdDSA","typ":"at+jwt"}"#.into()),
            Rejection::UnknownKey
        );
    }

    #[test]
    fn claims_are_enforced_against_the_verifier_and_the_clock() {
        let signer = Signer::new();
        let keys = signer.keys();
        let now = Utc::now();
        let token = signer.token(now);
        let mut other = signer.verifier();
        other.issuer = "https://evil.example.com".into();
        assert_eq!(other.verify(&keys, &token, now).unwrap_err(), Rejection::WrongIssuer);
        let mut other = signer.verifier();
        other.audience = "another".into();
        assert_eq!(other.verify(&keys, &token, now).unwrap_err(), Rejection::WrongAudience);
        let mut shorter = signer.verifier();
        shorter.max_lifetime = Duration::from_secs(300);
        assert_eq!(shorter.verify(&keys, &token, now).unwrap_err(), Rejection::Expired);
        let verifier = signer.verifier();
        let at = |secs: i64| verifier.verify(&keys, &token, now + chrono::Duration::seconds(secs));
        assert!(at(900 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(at(900 + LEEWAY_SECS).unwrap_err(), Rejection::Expired);
        assert_eq!(at(-LEEWAY_SECS - 1).unwrap_err(), Rejection::NotYetValid);
        // A token must name a user and a session.
        let mut claims = verifier.verify(&keys, &token, now).unwrap();
        claims.sid = "not-a-session".into();
        assert_eq!(
            verifier.verify(&keys, &signer.sign(&claims), now).unwrap_err(),
            Rejection::Malformed
        );
    }
}
