//! A signer for this crate's tests: an Ed25519 key, its JWKS, and tokens as authd issues them.

use crate::keys::KeySet;
use crate::verify::{AccessClaims, TokenRules};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::Duration;
use uuid::Uuid;

pub struct Signer {
    kid: String,
    encoding_key: EncodingKey,
    jwk: serde_json::Value,
}

impl Signer {
    pub fn new() -> Self {
        use base64::Engine;
        let key = Ed25519KeyPair::generate().unwrap();
        let der = key.to_pkcs8().unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        let kid = format!("test-{}", &crate::random_token()[..8]);
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
        Self {
            kid,
            encoding_key: EncodingKey::from_ed_der(der.as_ref()),
            jwk,
        }
    }

    pub fn keys(&self) -> KeySet {
        KeySet::from_jwks([&self.jwk]).unwrap()
    }

    pub fn verifier(&self) -> TokenRules {
        TokenRules {
            issuer: "https://auth.example.com".into(),
            audience: "api".into(),
            max_lifetime: Duration::from_secs(900),
        }
    }

    /// A token valid for 900 s from `now`.
    pub fn token(&self, now: DateTime<Utc>) -> String {
        let iat = now.timestamp();
        self.sign(&AccessClaims {
            iss: "https://auth.example.com".into(),
            sub: Uuid::now_v7().to_string(),
            aud: vec!["api".into()],
            exp: iat + 900,
            iat,
            nbf: iat,
            jti: crate::random_token()[..22].to_string(),
            sid: Uuid::now_v7().to_string(),
            scope: "profile".into(),
            roles: vec![],
            client_id: "authd".into(),
            username: "u".into(),
        })
    }

    pub fn sign(&self, claims: &AccessClaims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).unwrap()
    }
}
