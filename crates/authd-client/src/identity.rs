//! Who presented a credential: what [`Verifier::verify`](crate::Verifier::verify) answers and what
//! [`AuthLayer`](crate::AuthLayer) puts into each request's extensions.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What kind of credential was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// A JWT access token (`at+jwt`), issued at login or refresh.
    AccessToken,
    /// An API key (`authd_…`), holding its own scopes and no role.
    ApiKey,
}

impl TokenType {
    /// The RFC 7662 `token_type` name: `access_token` or `api_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::ApiKey => "api_key",
        }
    }
}

/// The holder of a live credential, with what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id (`sub`).
    pub subject: Uuid,
    /// The user's name when the credential was issued.
    pub username: String,
    /// The session of an access token (`sid`); `None` for an API key.
    pub session: Option<Uuid>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The user's roles, for access tokens; always empty for API keys.
    pub roles: Vec<String>,
    /// The client the token was issued to; for an API key, its public prefix.
    pub client_id: String,
    /// Access token or API key.
    pub token_type: TokenType,
    /// The token's id (`jti`), or the API key's id.
    pub id: String,
    /// When the credential stops being valid; `None` for an API key without an expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// Whether the credential holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the user holds `role` (never true for an API key).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
