//! Signing keys: generated here, stored with the private part sealed under the key-encryption key,
//! published (public parts only) as a JWKS, rotated by `authd keys rotate` or on a schedule.
//!
//! A new key is published `AUTHD_KEY_PUBLISH_AHEAD` before it signs, so verifiers that cache the
//! JWKS for minutes know it by then; every replica switches at the same instant, the new key's
//! `activates_at` (the old key's `retired_at`). A retired key stays published until the last
//! token it signed has expired, plus the same margin. `authd keys revoke` drops one at once.

use crate::clock::Clock;
use crate::config::SigningAlg;
use crate::crypto::b64url;
use crate::secret::Secret;
use crate::store::signing_keys::{self, SigningKeyRow};
use crate::store::{self, Pool, StoreError};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid} cannot be decrypted: wrong AUTHD_KEY_ENCRYPTION_KEY or corrupt row")]
    Decrypt { kid: String },
    #[error("signing key {kid} is malformed: {reason}")]
    Malformed { kid: String, reason: String },
    #[error("no active signing key")]
    NoActiveKey,
    #[error("no signing key {0}")]
    UnknownKey(String),
    #[error(
        "{0} is not retired (it signs now, or will); only retired keys can be revoked: run `authd keys rotate --now` first"
    )]
    NotRetired(String),
    #[error(transparent)]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The private half of the active key, ready to sign.
pub struct ActiveKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding_key: EncodingKey,
}

/// A key that signs, or will: from `activates_at` until `retired_at`.
pub struct Signer {
    pub activates_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub key: ActiveKey,
}

impl Signer {
    fn signs_at(&self, now: DateTime<Utc>) -> bool {
        self.activates_at <= now && self.retired_at.is_none_or(|end| end > now)
    }
}

/// The keys as loaded at one moment.
pub struct KeyRing {
    /// The keys that sign now or later, latest activation first.
    pub signers: Vec<Signer>,
    /// The public keys that verify tokens: the active one and retired ones still published.
    pub keys: authd_client::KeySet,
    /// Public JWKs, newest first.
    pub jwks: Vec<Value>,
    pub jwks_json: String,
}

/// The current [`KeyRing`], swapped whole on reload.
#[derive(Clone)]
pub struct SigningKeys {
    ring: Arc<RwLock<Arc<KeyRing>>>,
    /// Bumped whenever the published set changes, for `WatchKeys`.
    version: Arc<tokio::sync::watch::Sender<u64>>,
}

impl SigningKeys {
    pub fn current(&self) -> Arc<KeyRing> {
        self.ring.read().expect("key ring lock").clone()
    }

    /// Notified each time the key set changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Loads the published keys, creating the first one when the store has none.
    pub async fn load_or_create(
        pool: &Pool,
        kek: &Secret<[u8; 32]>,
        alg: SigningAlg,
        clock: &Clock,
        publish_for: Duration,
    ) -> Result<Self, KeyError> {
        let ring = match load_ring(pool, kek, clock.now(), publish_for).await {
            Err(KeyError::NoActiveKey) => {
                let row = generate(kek, alg, clock.now())?;
                let mut conn = store::conn(pool).await?;
                if signing_keys::insert_if_none_active(&mut conn, &row).await? {
                    tracing::info!(kid = %row.kid, alg = %row.alg, "created the first signing key");
                }
                drop(conn);
                load_ring(pool, kek, clock.now(), publish_for).await?
            }
            other => other?,
        };
        Ok(Self {
            ring: Arc::new(RwLock::new(Arc::new(ring))),
            version: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Re-reads the keys (picks up a rotation made by another process); returns whether the
    /// published set changed.
    pub async fn reload(
        &self,
        pool: &Pool,
        kek: &Secret<[u8; 32]>,
        now: DateTime<Utc>,
        publish_for: Duration,
    ) -> Result<bool, KeyError> {
        let ring = load_ring(pool, kek, now, publish_for).await?;
        let changed = {
            let mut current = self.ring.write().expect("key ring lock");
            let schedule = |ring: &KeyRing| -> Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
                ring.signers
                    .iter()
                    .map(|s| (s.key.kid.clone(), s.activates_at, s.retired_at))
                    .collect()
            };
            let changed = current.jwks_json != ring.jwks_json || schedule(&current) != schedule(&ring);
            if changed {
                *current = Arc::new(ring);
            }
            changed
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
        Ok(changed)
    }
}

/// Creates a key, published at once and signing from `now + ahead`, when the keys before it
/// retire. Returns its kid and when it starts signing.
pub async fn rotate(
    pool: &Pool,
    kek: &Secret<[u8; 32]>,
    alg: SigningAlg,
    now: DateTime<Utc>,
    ahead: Duration,
) -> Result<(String, DateTime<Utc>), KeyError> {
    let row = next_key(kek, alg, now, ahead)?;
    let mut conn = store::conn(pool).await?;
    signing_keys::insert_next(&mut conn, &row, None).await?;
    Ok((row.kid, row.activates_at))
}

/// [`rotate`], when the newest key began (or begins) signing `interval` or longer ago; once
/// across replicas. Returns the new kid, if a key was made.
pub async fn rotate_if_due(
    pool: &Pool,
    kek: &Secret<[u8; 32]>,
    alg: SigningAlg,
    now: DateTime<Utc>,
    ahead: Duration,
    interval: Duration,
) -> Result<Option<String>, KeyError> {
    let due_before = now - chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::days(3650));
    let mut conn = store::conn(pool).await?;
    // Checked first without a key: making one (RSA) costs far more than asking.
    if signing_keys::latest_activation(&mut conn)
        .await?
        .is_some_and(|at| at > due_before)
    {
        return Ok(None);
    }
    let row = next_key(kek, alg, now, ahead)?;
    Ok(signing_keys::insert_next(&mut conn, &row, Some(due_before))
        .await?
        .then_some(row.kid))
}

fn next_key(
    kek: &Secret<[u8; 32]>,
    alg: SigningAlg,
    now: DateTime<Utc>,
    ahead: Duration,
) -> Result<SigningKeyRow, KeyError> {
    let mut row = generate(kek, alg, now)?;
    row.activates_at = now + chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::zero());
    Ok(row)
}

/// Drops a retired key from the JWKS at once: every token it signed stops verifying. A key that
/// signs now or later cannot be revoked (some instant would have no key); rotate with `--now`
/// first.
pub async fn revoke(pool: &Pool, kid: &str, now: DateTime<Utc>) -> Result<(), KeyError> {
    let mut conn = store::conn(pool).await?;
    match signing_keys::revoke(&mut conn, kid, now).await? {
        signing_keys::Revoked::Done => Ok(()),
        signing_keys::Revoked::Unknown => Err(KeyError::UnknownKey(kid.to_string())),
        signing_keys::Revoked::NotRetired => Err(KeyError::NotRetired(kid.to_string())),
    }
}

async fn load_ring(
    pool: &Pool,
    kek: &Secret<[u8; 32]>,
    now: DateTime<Utc>,
    publish_for: Duration,
) -> Result<KeyRing, KeyError> {
    let retired_after = now - chrono::Duration::from_std(publish_for).unwrap_or(chrono::Duration::days(1));
    let rows = {
        let mut conn = store::conn(pool).await?;
        signing_keys::load_published(&mut conn, retired_after).await?
    };
    KeyRing::from_rows(&rows, kek, now)
}

impl KeyRing {
    /// Opens the keys that sign now or later (the rows not yet retired at `now`) and builds
    /// verifiers for every row given.
    pub fn from_rows(rows: &[SigningKeyRow], kek: &Secret<[u8; 32]>, now: DateTime<Utc>) -> Result<Self, KeyError> {
        if !rows.iter().any(|r| r.retired_at.is_none()) {
            return Err(KeyError::NoActiveKey);
        }
        let mut signers = Vec::new();
        for row in rows.iter().filter(|r| r.retired_at.is_none_or(|end| end > now)) {
            let private_der = open(kek, &row.kid, &row.private_key_encrypted)?;
            let alg = parse_alg(row)?;
            let encoding_key = match alg {
                Algorithm::EdDSA => EncodingKey::from_ed_der(private_der.expose()),
                Algorithm::ES256 => EncodingKey::from_ec_der(private_der.expose()),
                _ => EncodingKey::from_rsa_der(private_der.expose()),
            };
            signers.push(Signer {
                activates_at: row.activates_at,
                retired_at: row.retired_at,
                key: ActiveKey {
                    kid: row.kid.clone(),
                    alg,
                    encoding_key,
                },
            });
        }
        signers.sort_by_key(|s| std::cmp::Reverse(s.activates_at));
        let mut jwks = Vec::new();
        for row in rows {
            let jwk: Value = serde_json::from_str(&row.public_jwk).map_err(|e| malformed(row, e))?;
            // The JWK is what verifiers outside authd see: it must name the row's own key.
            let member = |name: &str| jwk.get(name).and_then(Value::as_str).map(str::to_string);
            if member("kid").as_deref() != Some(&row.kid) || member("alg").as_deref() != Some(&row.alg) {
                return Err(malformed(row, "its JWK names another kid or alg"));
            }
            parse_alg(row)?;
            jwks.push(jwk);
        }
        let keys = authd_client::KeySet::from_jwks(&jwks).map_err(|e| KeyError::Malformed {
            kid: e.kid,
            reason: e.reason,
        })?;
        let jwks_json = json!({ "keys": jwks }).to_string();
        Ok(KeyRing {
            signers,
            keys,
            jwks,
            jwks_json,
        })
    }
}

impl KeyRing {
    /// The key that signs at `now`: the latest activated one not yet retired.
    pub fn signer(&self, now: DateTime<Utc>) -> Result<&ActiveKey, KeyError> {
        self.signers
            .iter()
            .find(|s| s.signs_at(now))
            .map(|s| &s.key)
            .ok_or(KeyError::NoActiveKey)
    }
}

fn malformed(row: &SigningKeyRow, err: impl std::fmt::Display) -> KeyError {
    KeyError::Malformed {
        kid: row.kid.clone(),
        reason: err.to_string(),
    }
}

fn parse_alg(row: &SigningKeyRow) -> Result<Algorithm, KeyError> {
    match row.alg.as_str() {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        "RS256" => Ok(Algorithm::RS256),
        other => Err(malformed(row, format!("unsupported alg {other}"))),
    }
}

/// Generates a key pair: the private part as the DER jsonwebtoken signs with (PKCS#8 for EdDSA and
/// ES256, PKCS#1 for RS256), sealed; the public part as a JWK whose `kid` is its RFC 7638 thumbprint.
pub fn generate(kek: &Secret<[u8; 32]>, alg: SigningAlg, now: DateTime<Utc>) -> Result<SigningKeyRow, KeyError> {
    let fail = |e: &dyn std::fmt::Display| KeyError::Malformed {
        kid: "(new)".into(),
        reason: e.to_string(),
    };
    let (private_der, mut jwk, thumbprint_input): (Secret<Vec<u8>>, Value, String) = match alg {
        SigningAlg::EdDsa => {
            let key = Ed25519KeyPair::generate().map_err(|e| fail(&e))?;
            let der = key.to_pkcs8().map_err(|e| fail(&e))?;
            let x = b64url(key.public_key().as_ref());
            let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            (
                Secret::new(der.as_ref().to_vec()),
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                canonical,
            )
        }
        SigningAlg::Es256 => {
            let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|e| fail(&e))?;
            let der = key.to_pkcs8v1().map_err(|e| fail(&e))?;
            // The uncompressed point: 0x04, then x and y of 32 bytes each.
            let point = key.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(fail(&"P-256 public key is not an uncompressed point"));
            }
            let x = b64url(&point[1..33]);
            let y = b64url(&point[33..]);
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            (
                Secret::new(der.as_ref().to_vec()),
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                canonical,
            )
        }
        SigningAlg::Rs256 => {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| fail(&e))?;
            let pkcs8: Pkcs8V1Der<'static> = key.as_der().map_err(|e| fail(&e))?;
            let der = crate::crypto::pkcs8_private_key(pkcs8.as_ref())
                .ok_or_else(|| fail(&"RSA key is not PKCS#8"))?
                .to_vec();
            // What is sealed must be what signs: checked now rather than at the first token.
            RsaKeyPair::from_der(&der).map_err(|e| fail(&e))?;
            let public = key.public_key();
            let n = b64url(public.modulus().big_endian_without_leading_zero());
            let e = b64url(public.exponent().big_endian_without_leading_zero());
            let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            (Secret::new(der), json!({"kty": "RSA", "n": n, "e": e}), canonical)
        }
    };
    let kid = b64url(&Sha256::digest(thumbprint_input.as_bytes()));
    let object = jwk.as_object_mut().expect("jwk is an object");
    object.insert("kid".into(), json!(kid));
    object.insert("use".into(), json!("sig"));
    object.insert("alg".into(), json!(alg.as_str()));
    Ok(SigningKeyRow {
        private_key_encrypted: seal(kek, &kid, private_der.expose()),
        kid,
        alg: alg.as_str().to_string(),
        public_jwk: jwk.to_string(),
        created_at: now,
        activates_at: now,
        retired_at: None,
        revoked_at: None,
    })
}

fn seal(kek: &Secret<[u8; 32]>, kid: &str, plaintext: &[u8]) -> Vec<u8> {
    crate::crypto::seal(kek, kid.as_bytes(), plaintext)
}

fn open(kek: &Secret<[u8; 32]>, kid: &str, sealed: &[u8]) -> Result<Secret<Vec<u8>>, KeyError> {
    crate::crypto::open(kek, kid.as_bytes(), sealed).ok_or_else(|| KeyError::Decrypt { kid: kid.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_private_keys_open_only_with_the_right_key_and_kid() {
        let kek = Secret::new([7u8; 32]);
        let row = generate(&kek, SigningAlg::EdDsa, Utc::now()).unwrap();
        assert!(open(&kek, &row.kid, &row.private_key_encrypted).is_ok());
        assert!(open(&Secret::new([8u8; 32]), &row.kid, &row.private_key_encrypted).is_err());
        assert!(open(&kek, "other-kid", &row.private_key_encrypted).is_err());
        let jwk: Value = serde_json::from_str(&row.public_jwk).unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none());
        }
        assert_eq!(jwk["kid"], row.kid);
    }

    /// Keys stored by the former backends (ed25519-dalek, p256, rsa) must still open, sign and
    /// verify: rows written before aws-lc-rs stay in the database.
    #[test]
    fn keys_stored_by_the_former_backends_still_sign() {
        use base64::Engine;
        let kek = Secret::new([9u8; 32]);
        let now = Utc::now();
        let fixtures = include_str!("../../tests/fixtures/former-backend-keys.txt");
        let mut algs = Vec::new();
        for line in fixtures
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let mut fields = line.split(' ');
            let alg = fields.next().unwrap();
            let members: std::collections::BTreeMap<&str, &str> =
                fields.map(|field| field.split_once('=').unwrap()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(members["der"])
                .unwrap();
            let kid = format!("former-{alg}");
            let mut jwk = match alg {
                "EdDSA" => json!({"kty": "OKP", "crv": "Ed25519", "x": members["x"]}),
                "ES256" => json!({"kty": "EC", "crv": "P-256", "x": members["x"], "y": members["y"]}),
                _ => json!({"kty": "RSA", "n": members["n"], "e": members["e"]}),
            };
            let object = jwk.as_object_mut().unwrap();
            object.insert("kid".into(), json!(kid));
            object.insert("alg".into(), json!(alg));
            object.insert("use".into(), json!("sig"));
            let row = SigningKeyRow {
                private_key_encrypted: seal(&kek, &kid, &der),
                kid,
                alg: alg.to_string(),
                public_jwk: jwk.to_string(),
                created_at: now,
                activates_at: now,
                retired_at: None,
                revoked_at: None,
            };
            let ring = KeyRing::from_rows(&[row], &kek, now).unwrap();
            let issuer = crate::tokens::jwt::TokenIssuer {
                issuer: "https://auth.example.com".into(),
                audience: "api".into(),
                ttl: Duration::from_secs(900),
            };
            let request = crate::tokens::jwt::TokenRequest {
                user_id: uuid::Uuid::now_v7(),
                username: "u",
                session_id: uuid::Uuid::now_v7(),
                roles: &["user".to_string()],
                scope: "profile",
            };
            let token = issuer.issue(&ring, &request, now).unwrap().0;
            assert!(issuer.verify(&ring, &token, now).is_ok(), "{alg}");
            algs.push(alg.to_string());
        }
        assert_eq!(algs, ["EdDSA", "ES256", "RS256"]);
    }
}
