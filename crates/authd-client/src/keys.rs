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

    /// Builds the set from another issuer's JWKS document (an OpenID provider's), keeping the
    /// keys this crate can verify with and leaving out the rest: a provider publishes keys for
    /// other uses too, and some leave `alg` out (it is then taken from the key type: `RSA` is
    /// RS256, `EC` on P-256 is ES256, `OKP` on Ed25519 is EdDSA). Keys without a `kid`, for
    /// encryption, of another type or too short, and a repeated `kid`, are left out; only a
    /// document that is not a JWKS at all is an error.
    pub fn from_provider_jwks_json(json: &str) -> Result<Self, KeySetError> {
        let mut set = Self::default();
        for jwk in jwks_keys(json)? {
            let member = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
            let alg = match (member("alg"), member("kty"), member("crv")) {
                ("", "RSA", _) => "RS256",
                ("", "EC", "P-256") => "ES256",
                ("", "OKP", "Ed25519") => "EdDSA",
                (alg, _, _) => alg,
            };
            let mut jwk = jwk.clone();
            jwk["alg"] = Value::String(alg.to_string());
            let kid = member("kid").to_string();
            if kid.is_empty() || set.keys.contains_key(&kid) {
                continue;
            }
            if let Ok(mut one) = Self::from_jwks([&jwk]) {
                set.keys.extend(one.keys.drain());
            }
        }
        Ok(set)
    }

    /// Builds the set from a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks_json(json: &str) -> Result<Self, KeySetError> {
        Self::from_jwks(&jwks_keys(json)?)
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

/// The `keys` of a JWKS document.
fn jwks_keys(json: &str) -> Result<Vec<Value>, KeySetError> {
    let error = |reason: String| KeySetError {
        kid: String::new(),
        reason,
    };
    let mut document: Value = serde_json::from_str(json).map_err(|e| error(e.to_string()))?;
    match document.get_mut("keys").map(Value::take) {
        Some(Value::Array(keys)) => Ok(keys),
        _ => Err(error("no `keys` array".into())),
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

    #[test]
    fn a_provider_key_set_keeps_what_it_can_verify_with() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let document = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "no-alg"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "no-alg", "alg": "EdDSA"},
        ]});
        let set = KeySet::from_provider_jwks_json(&document.to_string()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("no-alg").unwrap().alg, Algorithm::EdDSA);
        assert!(KeySet::from_provider_jwks_json("{}").is_err());
        assert!(KeySet::from_provider_jwks_json("not json").is_err());
    }
}
