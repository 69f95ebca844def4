//! The API key format: `authd_` + a 12-character public id, `_`, 43 characters of secret (256 bits,
//! base64url) and a 6-character CRC-32 checksum (base62), 68 characters in all.
//!
//! The fixed `authd_` start lets secret scanners find leaked keys; the checksum lets them (and us)
//! tell a real key from a typo without a look-up. The public part (`authd_<id>`) is the key's
//! `prefix`: safe to show, and how a presented key finds its row.

use rand::Rng;
use rand::rngs::OsRng;

/// How every key starts: what secret scanners look for.
pub const KEY_START: &str = "authd_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Length of a key's public prefix (`authd_` and the 12-character id).
pub const PREFIX_LEN: usize = KEY_START.len() + ID_LEN;
/// Length of a whole key: prefix, `_`, secret and checksum (68).
pub const KEY_LEN: usize = PREFIX_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new public prefix: `authd_` and 12 random lower-case alphanumerics.
pub fn new_prefix() -> String {
    let mut rng = OsRng;
    let id: String = (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
        .collect();
    format!("{KEY_START}{id}")
}

/// A full key under `prefix`, with a fresh secret.
pub fn new_key(prefix: &str) -> String {
    with_checksum(&format!("{prefix}_{}", crate::random_token()))
}

/// `body` followed by its checksum.
pub fn with_checksum(body: &str) -> String {
    format!("{body}{}", checksum(body))
}

/// Cheap shape test used to route a bearer credential: keys and JWTs never look alike.
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(KEY_START)
}

/// The prefix of a well-formed key whose checksum holds; `None` for anything else.
pub fn parse(key: &str) -> Option<&str> {
    if key.len() != KEY_LEN || !key.is_ascii() || !key.starts_with(KEY_START) {
        return None;
    }
    let prefix = &key[..PREFIX_LEN];
    if !prefix[KEY_START.len()..].bytes().all(|b| ID_ALPHABET.contains(&b)) || key.as_bytes()[PREFIX_LEN] != b'_' {
        return None;
    }
    let (body, given) = key.split_at(KEY_LEN - CHECKSUM_LEN);
    let secret = &body[PREFIX_LEN + 1..];
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    bool::from(subtle::ConstantTimeEq::ct_eq(
        checksum(body).as_bytes(),
        given.as_bytes(),
    ))
    .then_some(prefix)
}

fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// CRC-32 (IEEE) lookup table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), a byte at a time: it runs on every presented key.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let prefix = new_prefix();
        let key = new_key(&prefix);
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with(&prefix));
        assert_eq!(parse(&key), Some(prefix.as_str()));
        // Change each position in turn: the checksum or the shape always catches it.
        for i in 0..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != key {
                assert_eq!(parse(&tampered), None, "position {i}");
            }
        }
        assert_eq!(parse(""), None);
        assert_eq!(parse("authd_"), None);
    }

    proptest::proptest! {
        /// Any key authd makes parses to its own prefix, and any single-character change to it,
        /// wherever and whatever, is refused (by the checksum, or by the shape).
        #[test]
        fn a_key_parses_and_no_single_change_does(position in 0usize..KEY_LEN, replacement in proptest::char::any()) {
            let prefix = new_prefix();
            let key = new_key(&prefix);
            proptest::prop_assert_eq!(parse(&key), Some(prefix.as_str()));
            let mut tampered: Vec<char> = key.chars().collect();
            proptest::prop_assume!(tampered[position] != replacement);
            tampered[position] = replacement;
            let tampered: String = tampered.into_iter().collect();
            proptest::prop_assert_eq!(parse(&tampered), None);
        }
    }
}
