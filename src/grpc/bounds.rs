//! Length bounds on request fields, checked before any other work: before a rate-limit key is
//! built, a hash computed or the store asked, so an oversized field costs nothing but its
//! refusal. Each bound is generous next to the rule that parses the field later.

use crate::error::{Error, Result};

/// An email or a username, as typed to log in.
pub const IDENTIFIER: usize = 320;
pub const EMAIL: usize = 320;
pub const USERNAME: usize = 128;
/// 128 characters of up to four bytes (the password rule counts characters).
pub const PASSWORD: usize = 512;
/// Refresh, reset, verification and deletion tokens (43 characters when genuine).
pub const OPAQUE_TOKEN: usize = 512;
/// A credential handed to `Introspect` or `Revoke`: an access token, an API key or a refresh token.
pub const CREDENTIAL: usize = crate::authn::MAX_CREDENTIAL;
pub const ID_TOKEN: usize = 16_384;
/// Labels, device names, nonces, provider names.
pub const LABEL: usize = 512;
/// Ids, page tokens, event types and other short machine strings.
pub const SHORT: usize = 128;
/// Scopes on one API key, and the length of each (the scope rule allows 64).
pub const SCOPES: usize = 64;
pub const SCOPE: usize = 128;

/// Refuses the first field longer than its bound, naming it: `(field, value, max bytes)`.
pub fn check(fields: &[(&'static str, &str, usize)]) -> Result<()> {
    match fields.iter().find(|(_, value, max)| value.len() > *max) {
        Some((field, _, max)) => Err(Error::invalid(field, format!("is too long (at most {max} bytes)"))),
        None => Ok(()),
    }
}

/// Refuses a list of scopes longer than [`SCOPES`], or holding one longer than [`SCOPE`].
pub fn check_scopes(scopes: &[String]) -> Result<()> {
    if scopes.len() > SCOPES {
        return Err(Error::invalid("scopes", format!("at most {SCOPES} scopes")));
    }
    for scope in scopes {
        check(&[("scopes", scope, SCOPE)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_field_over_its_bound() {
        assert!(check(&[("a", "abc", 3)]).is_ok());
        let long = "x".repeat(100_000);
        match check(&[("a", "ok", 3), ("identifier", &long, IDENTIFIER)]) {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "identifier");
                assert!(reason.len() < 64, "a short message: {reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
