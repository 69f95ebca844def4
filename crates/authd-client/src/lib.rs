//! The verification core of authd, shared by the server's hot path and by services that verify
//! authd's credentials themselves: one implementation of the rules.
//!
//! - [`verify`]: access-token claims and their verification under authd's rule set (security
//!   rule 3), against a [`KeySet`] built from a JWKS (public keys only).
//! - [`cache`]: the bounded cache of tokens already verified.
//! - [`revocation`]: revocations and the in-process view consulted on every call.
//! - [`api_key`]: the API-key format (shape, checksum).
//! - [`id_token`]: OpenID Connect ID tokens of other issuers, for federated sign-in.
//!
//! - [`Verifier`] (feature `connect`, on by default): the network side. It follows authd's
//!   `GetJwks`, `WatchKeys` and `WatchRevocations`, verifies in-process, asks `Introspect` what
//!   it cannot decide, and fails closed with [`Rejection::Unavailable`] when it cannot be sure.
//! - [`AuthLayer`] (feature `connect`): a tower layer for tonic and axum services.
//!
//! Nothing here touches a database, mail, password hashing, Redis or an HTTP server.
#![warn(missing_docs)]
// The crate takes the time from its caller; only tests read the system clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api_key;
pub mod cache;
pub mod id_token;
pub mod identity;
pub mod keys;
#[cfg(feature = "connect")]
pub mod layer;
#[cfg(feature = "connect")]
pub mod remote;
pub mod revocation;
pub mod verify;

#[cfg(test)]
mod testing;

pub use cache::VerifiedTokens;
pub use identity::{Identity, TokenType};
pub use keys::{KeySet, KeySetError};
#[cfg(feature = "connect")]
pub use layer::AuthLayer;
#[cfg(feature = "connect")]
pub use remote::{ConnectError, Options, Stats, Verifier};
pub use revocation::{Revocation, RevocationKind, RevocationView};
pub use verify::{AccessClaims, LEEWAY_SECS, Rejection, TokenRules};

/// 32 bytes (256 bits) from the operating system's CSPRNG, base64url without padding (43 chars).
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
