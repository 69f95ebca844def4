//! Signing keys, access tokens (JWT) and their verification.

pub mod cache;
pub mod jwt;
pub mod keys;
mod revoke;

pub use cache::VerifiedTokens;
pub use jwt::{AccessClaims, TokenIssuer};
pub use keys::{KeyRing, SigningKeys};
