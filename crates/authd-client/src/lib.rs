//! The verification core of authd, shared by the server's hot path and by services that verify
//! authd's credentials themselves: one implementation of the rules.
//!
//! - [`verify`]: access-token claims and their verification under authd's rule set (security
//!   rule 3), against a [`KeySet`] built from a JWKS (public keys only).
//! - [`cache`]: the bounded cache of tokens already verified.
//! - [`revocation`]: revocations and the in-process view consulted on every call.
//! - [`api_key`]: the API-key format (shape, checksum).
//!
//! Nothing here touches a database, mail, password hashing, Redis or an HTTP server.

// The crate takes the time from its caller; only tests read the system clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api_key;
pub mod cache;
pub mod keys;
pub mod revocation;
pub mod verify;

#[cfg(test)]
mod testing;

pub use cache::VerifiedTokens;
pub use keys::{KeySet, KeySetError};
pub use revocation::{Revocation, RevocationKind, RevocationView};
pub use verify::{AccessClaims, LEEWAY_SECS, Rejection, Verifier};

/// 32 bytes (256 bits) from the operating system's CSPRNG, base64url without padding (43 chars).
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
