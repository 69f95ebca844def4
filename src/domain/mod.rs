//! Input parsed into types at the edge: once a value is an [`Email`] or a [`Password`], the rules
//! behind it hold everywhere.

mod email;
mod password;
mod scope;
mod username;

pub use email::Email;
pub use password::{Password, PasswordPolicy};
pub use scope::{Scope, Scopes};
pub use username::Username;

/// The form a login identifier (email or username) is looked up by.
pub fn normalize_identifier(identifier: &str) -> String {
    email::normalize(identifier)
}

/// An id (a UUID) given in a request; `field` names it in the error.
pub fn parse_id(text: &str, field: &'static str) -> Result<uuid::Uuid, crate::error::Error> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| crate::error::Error::invalid(field, "is not a valid id"))
}

/// Roles a user can hold; carried in access tokens as `roles`.
pub const ROLE_USER: &str = "user";
pub const ROLE_MODERATOR: &str = "moderator";
pub const ROLE_ADMIN: &str = "admin";
pub const ROLES: &[&str] = &[ROLE_USER, ROLE_MODERATOR, ROLE_ADMIN];
