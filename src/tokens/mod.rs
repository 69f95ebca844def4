//! Signing keys, access tokens (JWT) and their verification.

pub mod jwt;
pub mod keys;
mod revoke;

pub use jwt::{AccessClaims, TokenIssuer};
pub use keys::{KeyRing, SigningKeys};
