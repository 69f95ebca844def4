//! Input parsed into types at the edge: once a value is an [`Email`] or a [`Password`], the rules
//! behind it hold everywhere.

mod email;
mod id;
mod page;
mod password;
mod role;
mod scope;
mod username;

pub use email::Email;
pub use id::{ApiKeyId, SessionId, UserId};
pub use page::Page;
pub use password::{Password, PasswordPolicy};
pub use role::Role;
pub use scope::{Scope, Scopes};
pub use username::Username;

/// The form a login identifier (email or username) is looked up by.
pub fn normalize_identifier(identifier: &str) -> String {
    email::normalize(identifier)
}
