//! Small cryptographic helpers shared by every kind of secret token.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use authd_client::random_token;

/// SHA-256 of a high-entropy secret: what the database stores in place of the secret.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A keyed digest (HMAC-SHA-256 under a key derived from the key-encryption key for `context`),
/// hex, 128 bits: lets records correlate a value (a typed identifier) without holding it, and
/// without anyone lacking the key being able to test guesses against it.
pub fn keyed_digest(kek: &Secret<[u8; 32]>, context: &str, value: &[u8]) -> String {
    digest_with(&derive_key(kek, context), value)
}

/// The key [`keyed_digest`] uses for `context`, for callers that digest many values.
pub fn derive_key(kek: &Secret<[u8; 32]>, context: &str) -> Secret<[u8; 32]> {
    use hmac::{Hmac, Mac};
    let mut derived = <Hmac<Sha256> as Mac>::new_from_slice(kek.expose()).expect("any key length");
    derived.update(context.as_bytes());
    Secret::new(derived.finalize().into_bytes().into())
}

/// [`keyed_digest`] under a key from [`derive_key`].
pub fn digest_with(key: &Secret<[u8; 32]>, value: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("any key length");
    mac.update(value);
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Encrypts with XChaCha20-Poly1305 under the key-encryption key, binding `context` (a key id, a
/// table name) as associated data: `nonce (24 bytes) || ciphertext`.
pub fn seal(kek: &Secret<[u8; 32]>, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(kek.expose().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .expect("encryption cannot fail for in-memory buffers");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// Reverses [`seal`]; `None` for a wrong key, a wrong context or tampered bytes.
pub fn open(kek: &Secret<[u8; 32]>, context: &[u8], sealed: &[u8]) -> Option<Secret<Vec<u8>>> {
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(24);
    let cipher = XChaCha20Poly1305::new(kek.expose().into());
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: context,
            },
        )
        .map(Secret::new)
        .ok()
}

/// One DER element at the start of `input`: (tag, contents, what follows). Definite lengths of
/// up to four bytes only, as keys have.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte))
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The algorithm-specific private key inside a PKCS#8 `PrivateKeyInfo` (for RSA, the PKCS#1
/// `RSAPrivateKey` that jsonwebtoken signs with): `SEQUENCE { INTEGER, AlgorithmIdentifier,
/// OCTET STRING key, ... }`.
pub fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (SEQUENCE, info, _) = der_element(pkcs8)? else {
        return None;
    };
    let (INTEGER, _version, rest) = der_element(info)? else {
        return None;
    };
    let (SEQUENCE, _algorithm, rest) = der_element(rest)? else {
        return None;
    };
    let (OCTET_STRING, key, _) = der_element(rest)? else {
        return None;
    };
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rsa_key_inside_pkcs8_is_what_jsonwebtoken_signs_with() {
        use aws_lc_rs::encoding::AsDer;
        let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = key.as_der().unwrap();
        let pkcs1 = pkcs8_private_key(pkcs8.as_ref()).expect("PKCS#8");
        assert!(aws_lc_rs::signature::RsaKeyPair::from_der(pkcs1).is_ok());
        let signing = jsonwebtoken::EncodingKey::from_rsa_der(pkcs1);
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        assert!(jsonwebtoken::encode(&header, &serde_json::json!({"sub": "x"}), &signing).is_ok());
    }

    #[test]
    fn malformed_der_is_refused() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x02],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x04, 0x00],
        ] {
            assert_eq!(pkcs8_private_key(input), None, "{input:?}");
        }
    }
}
