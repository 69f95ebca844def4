//! Signing keys and the issuing of access tokens. Verification (the rules, the cache of verified
//! tokens) lives in the `authd-client` crate, which the hot path calls.

pub mod jwt;
pub mod keys;

pub use authd_client::{AccessClaims, VerifiedTokens};
pub use jwt::TokenIssuer;
pub use keys::{KeyRing, SigningKeys};
