//! The public keys tokens are verified with, built from a JWKS: nothing private ever enters it.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::collections::HashMap;

/// A key that verifies tokens, and the one algorithm it verifies.
pub struct VerifyingKey {
    /// The only algorithm this key verifies (EdDSA, ES256 or RS256).
    pub alg: Algorithm,
    /// The public key itself.
    pub decoding_key: DecodingKey,
}

/// Why a JWK could not be used.
#[derive(Debug, thiserror::Error)]
#[error("JWK {kid}: {reason}")]
pub struct KeySetError {
    /// The `kid` of the refused JWK (empty when it had none or the document did not parse).
    pub kid: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Verifying keys by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Builds the set from JWKs (the `keys` of a JWKS document): EdDSA (`OKP`, Ed25519), ES256
    /// (`EC`, P-256) and RS256 (`RSA`, at least 2048 bits), for signatures. Any other key, a key
    /// whose type does not fit its algorithm, a missing member or a repeated `kid` is an error.
    pub fn from_jwks<'a>(jwks: impl IntoIterator<Item = &'a Value>) -> Result<Self, KeySetError> {
        let mut keys = HashMap::new();
        for jwk in jwks {
            let member = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
            let kid = member("kid").to_string();
            let fail = |reason: String| KeySetError {
                kid: kid.clone(),
                reason,
            };
            let shape = match member("alg") {
                "EdDSA" => member("kty") == "OKP" && member("crv") == "Ed25519" && !member("x").is_empty(),
                "ES256" => {
                    member("kty") == "EC"
                        && member("crv") == "P-256"
                        && !member("x").is_empty()
                        && !member("y").is_empty()
                }
                // 2048 bits of modulus are 342 base64url characters.
                "RS256" => member("kty") == "RSA" && member("n").len() >= 342 && !member("e").is_empty(),
                _ => false,
            };
            if !shape || !matches!(member("use"), "" | "sig") {
                return Err(fail(format!(
                    "not an EdDSA (Ed25519), ES256 (P-256) or RS256 (2048+ bits) signing key: alg `{}`, kty `{}`",
                    member("alg"),
                    member("kty")
                )));
            }
            if keys.contains_key(&kid) {
                return Err(fail("the kid appears twice".into()));
            }
            let (alg, decoding_key) = match member("alg") {
                "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_components(member("x"))),
                "ES256" => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_components(member("x"), member("y")),
                ),
                "RS256" => (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_components(member("n"), member("e")),
                ),
                other => return Err(fail(format!("unsupported alg `{other}`"))),
            };
            let decoding_key = decoding_key.map_err(|e| fail(e.to_string()))?;
            if kid.is_empty() {
                return Err(fail("no kid".into()));
            }
            keys.insert(kid, VerifyingKey { alg, decoding_key });
        }
        Ok(Self { keys })
    }

    /// Builds the set from a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks_json(json: &str) -> Result<Self, KeySetError> {
        let document: Value = serde_json::from_str(json).map_err(|e| KeySetError {
            kid: String::new(),
            reason: e.to_string(),
        })?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeySetError {
                kid: String::new(),
                reason: "no `keys` array".into(),
            })?;
        Self::from_jwks(keys)
    }

    /// The key with this `kid`, if published.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Whether a key with this `kid` is published.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_well_formed_signing_keys_enter_the_set() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let good = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "a", "alg": "EdDSA", "use": "sig"});
        assert_eq!(KeySet::from_jwks([&good]).unwrap().len(), 1);
        for bad in [
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "b", "alg": "EdDSA"}),
            json!({"kty": "OKP", "crv": "X25519", "x": x, "kid": "c", "alg": "EdDSA"}),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "d", "alg": "EdDSA"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "e", "alg": "EdDSA", "use": "enc"}),
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "f", "alg": "HS256"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "g", "alg": "RS256"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"}),
        ] {
            assert!(KeySet::from_jwks([&bad]).is_err(), "{bad}");
        }
        assert!(KeySet::from_jwks([&good, &good]).is_err(), "a repeated kid");
    }
}
