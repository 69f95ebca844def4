//! The caller of an RPC, as [`crate::authn::Authenticator`] establishes it from its credential (an
//! access token or an API key), and where the call came from.

use crate::domain::{Role, Scope};
use crate::error::{Error, Result};
use uuid::Uuid;

/// Where a call came from, for sessions and (later) the audit trail.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// What the credential was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    AccessToken { session_id: Uuid, jti: String },
    ApiKey { key_id: Uuid },
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub username: String,
    /// The roles authd knows among those the credential carries (an API key carries none).
    pub roles: Vec<Role>,
    pub scopes: Vec<String>,
    pub credential: Credential,
}

impl Caller {
    /// Administrator powers come only with an administrator's own session: an API key holds the
    /// scopes it lists and nothing more, whoever owns it.
    pub fn is_admin(&self) -> bool {
        self.is_user_session() && self.roles.contains(&Role::Admin)
    }

    pub fn is_user_session(&self) -> bool {
        matches!(self.credential, Credential::AccessToken { .. })
    }

    /// An administrator's access token holds every scope; others hold what their credential lists.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.is_admin() || self.scopes.iter().any(|s| s == scope)
    }

    /// Managing the account itself (its keys, sessions, password, profile) takes the user's own
    /// session: a leaked API key must not be able to mint, rotate or revoke credentials.
    pub fn require_user_session(&self) -> Result<()> {
        if self.is_user_session() {
            Ok(())
        } else {
            Err(Error::denied("this call needs a user's access token, not an API key"))
        }
    }

    pub fn require_scope(&self, scope: &'static str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Error::denied(scope))
        }
    }

    pub fn session_id(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::AccessToken { session_id, .. } => Some(*session_id),
            Credential::ApiKey { .. } => None,
        }
    }

    pub fn can_introspect(&self) -> bool {
        self.has_scope(Scope::INTROSPECT)
    }
}
