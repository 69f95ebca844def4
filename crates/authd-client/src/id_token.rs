//! OpenID Connect ID tokens of other issuers (Google, Apple, any OpenID provider), verified with
//! the discipline of authd's own tokens: only RS256, ES256 and EdDSA, only keys of the provider's
//! key set (`kid` is only a map key; `jku`, `x5u`, `jwk` and `x5c` headers refuse the token), the
//! header's `alg` must be the key's, then `iss` exactly, `aud`, `azp` when there are several
//! audiences, `exp`, `iat` and `nbf` within [`ID_TOKEN_LEEWAY_SECS`], and the nonce when one is
//! expected (as sent, or its SHA-256 in hex, as Apple's native sign-in puts it).

use crate::keys::KeySet;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// How far `exp`, `iat` and `nbf` of an ID token may be off.
pub const ID_TOKEN_LEEWAY_SECS: i64 = 60;
/// Longer ID tokens are refused before any parsing.
pub const MAX_ID_TOKEN_LEN: usize = 16 * 1024;

/// The claims of an ID token that authd reads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    /// The issuer (`iss`).
    pub iss: String,
    /// The person's stable id at the provider (`sub`): with the issuer, the identity's key.
    pub sub: String,
    /// The audiences (`aud`): one of them must be a configured client id.
    #[serde(deserialize_with = "crate::verify::one_or_many")]
    pub aud: Vec<String>,
    /// The authorised party (`azp`), required when there are several audiences.
    #[serde(default)]
    pub azp: Option<String>,
    /// Expiry (`exp`), seconds since the epoch.
    pub exp: i64,
    /// Issue time (`iat`), seconds since the epoch.
    pub iat: i64,
    /// Not before (`nbf`), when the provider sets it.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The nonce the sign-in was started with (or its SHA-256), when there was one.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The address the provider holds for the person.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider verified that address (Apple sends it as a string).
    #[serde(default, deserialize_with = "bool_or_string")]
    pub email_verified: Option<bool>,
    /// Apple: whether the address is a private relay address (also a string at times).
    #[serde(default, deserialize_with = "bool_or_string")]
    pub is_private_email: Option<bool>,
    /// The person's name, when shared.
    #[serde(default)]
    pub name: Option<String>,
    /// The name the person goes by at the provider, when shared.
    #[serde(default)]
    pub preferred_username: Option<String>,
}

fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        String(String),
    }
    Ok(match Option::<BoolOrString>::deserialize(d)? {
        Some(BoolOrString::Bool(b)) => Some(b),
        Some(BoolOrString::String(s)) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        None => None,
    })
}

/// Why an ID token is refused. Never shown to callers in detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a JWT of the expected shape, or carrying a header that points elsewhere.
    #[error("not an ID token")]
    Malformed,
    /// No key of the provider's set has the token's `kid` (the set may be out of date).
    #[error("unknown kid")]
    UnknownKey,
    /// The header's `alg` is not allowed, or not its key's.
    #[error("alg not allowed for this key")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the provider's.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No audience is a configured client id, or `azp` does not name one.
    #[error("wrong audience")]
    WrongAudience,
    /// Past `exp`.
    #[error("expired")]
    Expired,
    /// Before `iat` or `nbf`.
    #[error("not yet valid")]
    NotYetValid,
    /// The nonce does not match the one the sign-in was started with.
    #[error("nonce mismatch")]
    NonceMismatch,
}

/// The header's `kid`, to choose (or refresh) the key set before verifying; `None` when the
/// token is not a JWT or names no key.
pub fn kid_of(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// What an ID token of one provider must satisfy.
#[derive(Clone, Debug)]
pub struct IdTokenRules {
    /// The accepted spellings of the issuer (Google has two); the first is the canonical one.
    pub issuers: Vec<String>,
    /// The client ids an audience must be one of.
    pub client_ids: Vec<String>,
}

impl IdTokenRules {
    /// Verifies signature and claims against the provider's keys and the caller's clock.
    pub fn verify(
        &self,
        keys: &KeySet,
        token: &str,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IdClaims, IdTokenError> {
        let header = crate::verify::plain_header(token, MAX_ID_TOKEN_LEN).ok_or(IdTokenError::Malformed)?;
        // An access token of the provider is not an ID token.
        if header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(IdTokenError::Malformed);
        }
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256) {
            return Err(IdTokenError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(IdTokenError::UnknownKey)?;
        let key = keys.get(&kid).ok_or(IdTokenError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(IdTokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let claims = jsonwebtoken::decode::<IdClaims>(token, &key.decoding_key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                _ => IdTokenError::Malformed,
            })?
            .claims;
        if !self.issuers.contains(&claims.iss) {
            return Err(IdTokenError::WrongIssuer);
        }
        if !claims.aud.iter().any(|aud| self.client_ids.contains(aud)) {
            return Err(IdTokenError::WrongAudience);
        }
        if claims.aud.len() > 1 && !claims.azp.as_ref().is_some_and(|azp| self.client_ids.contains(azp)) {
            return Err(IdTokenError::WrongAudience);
        }
        let now = now.timestamp();
        if claims.exp.saturating_add(ID_TOKEN_LEEWAY_SECS) <= now {
            return Err(IdTokenError::Expired);
        }
        if claims.iat.saturating_sub(ID_TOKEN_LEEWAY_SECS) > now
            || claims
                .nbf
                .is_some_and(|nbf| nbf.saturating_sub(ID_TOKEN_LEEWAY_SECS) > now)
        {
            return Err(IdTokenError::NotYetValid);
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(IdTokenError::Malformed);
        }
        if let Some(expected) = nonce {
            let hashed = hex(&Sha256::digest(expected.as_bytes()));
            let matches = claims.nonce.as_deref().is_some_and(|n| {
                use subtle::ConstantTimeEq;
                bool::from(n.as_bytes().ct_eq(expected.as_bytes())) || bool::from(n.as_bytes().ct_eq(hashed.as_bytes()))
            });
            if !matches {
                return Err(IdTokenError::NonceMismatch);
            }
        }
        Ok(claims)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;
    use serde_json::json;

    struct Provider {
        /// PKCS#8.
        key: Vec<u8>,
        keys: KeySet,
    }

    impl Provider {
        fn new() -> Self {
            let pair = Ed25519KeyPair::generate().unwrap();
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            let key = pair.to_pkcs8().unwrap().as_ref().to_vec();
            let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}]});
            let keys = KeySet::from_provider_jwks_json(&jwks.to_string()).unwrap();
            Self { key, keys }
        }

        fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
            let mut h = jsonwebtoken::Header::new(Algorithm::EdDSA);
            h.kid = header["kid"].as_str().map(str::to_string);
            let encoding = jsonwebtoken::EncodingKey::from_ed_der(&self.key);
            jsonwebtoken::encode(&h, &claims, &encoding).unwrap()
        }
    }

    fn rules() -> IdTokenRules {
        IdTokenRules {
            issuers: vec!["https://accounts.google.com".into(), "accounts.google.com".into()],
            client_ids: vec!["web".into(), "ios".into()],
        }
    }

    #[test]
    fn id_tokens_are_held_to_the_provider_the_audience_the_clock_and_the_nonce() {
        let provider = Provider::new();
        let now = Utc::now();
        let t = now.timestamp();
        let claims = |extra: serde_json::Value| {
            let mut c = json!({"iss": "accounts.google.com", "sub": "1234", "aud": "web", "exp": t + 600,
                               "iat": t, "email": "a@example.com", "email_verified": "true", "nonce": "n-1"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let kid = json!({"kid": "k1"});
        let verify = |token: &str, nonce: Option<&str>| rules().verify(&provider.keys, token, nonce, now);
        let good = verify(&provider.sign(kid.clone(), claims(json!({}))), Some("n-1")).unwrap();
        assert_eq!((good.sub.as_str(), good.email_verified), ("1234", Some(true)));
        // Apple's native flow: the token holds the SHA-256 of the nonce.
        let hashed = hex(&Sha256::digest(b"raw"));
        assert!(
            verify(
                &provider.sign(kid.clone(), claims(json!({"nonce": hashed}))),
                Some("raw")
            )
            .is_ok()
        );
        let refused = |extra: serde_json::Value, nonce: Option<&str>| {
            verify(&provider.sign(kid.clone(), claims(extra)), nonce).unwrap_err()
        };
        assert_eq!(refused(json!({}), Some("other")), IdTokenError::NonceMismatch);
        assert_eq!(
            refused(json!({"iss": "https://evil.example"}), None),
            IdTokenError::WrongIssuer
        );
        assert_eq!(refused(json!({"aud": "android"}), None), IdTokenError::WrongAudience);
        assert_eq!(
            refused(json!({"aud": ["web", "other"]}), None),
            IdTokenError::WrongAudience
        );
        assert!(
            verify(
                &provider.sign(kid.clone(), claims(json!({"aud": ["web", "x"], "azp": "ios"}))),
                None
            )
            .is_ok()
        );
        assert_eq!(refused(json!({"exp": t - 61}), None), IdTokenError::Expired);
        assert_eq!(refused(json!({"iat": t + 61}), None), IdTokenError::NotYetValid);
        assert_eq!(refused(json!({"nbf": t + 61}), None), IdTokenError::NotYetValid);
        assert_eq!(
            verify(&provider.sign(json!({"kid": "k2"}), claims(json!({}))), None).unwrap_err(),
            IdTokenError::UnknownKey
        );
        let other = Provider::new();
        assert_eq!(
            verify(&other.sign(kid.clone(), claims(json!({}))), None).unwrap_err(),
            IdTokenError::BadSignature
        );
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "kid": "k1"})),
            b64(claims(json!({})))
        );
        assert!(verify(&none, None).is_err());
        assert_eq!(verify("garbage", None).unwrap_err(), IdTokenError::Malformed);
    }
}
