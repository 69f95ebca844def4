//! The caller of an RPC, established from its credential (an access token or an API key).

use crate::app::App;
use crate::domain::{ROLE_ADMIN, Scope};
use crate::error::{Error, Result};
use crate::revocation::RevocationView;
use crate::tokens::{AccessClaims, KeyRing, VerifiedTokens};
use authd_client::Verifier;
use chrono::{DateTime, Utc};
use std::sync::Arc;
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
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub credential: Credential,
}

impl Caller {
    /// Administrator powers come only with an administrator's own session: an API key holds the
    /// scopes it lists and nothing more, whoever owns it.
    pub fn is_admin(&self) -> bool {
        self.is_user_session() && self.roles.iter().any(|r| r == ROLE_ADMIN)
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

/// A credential that is valid and live, as introspection reports it.
#[derive(Clone, Debug)]
pub enum ActiveCredential {
    AccessToken(Arc<AccessClaims>),
    ApiKey(crate::api_keys::ActiveApiKey),
}

/// The in-process part of checking an access token, with no I/O: verified (or found in the cache
/// of verified tokens) and not revoked in the in-memory view. A replica whose view is not known
/// current must still ask Postgres, which [`App::validate_credential`] does.
pub fn check_access_token(
    verifier: &Verifier,
    ring: &KeyRing,
    cache: &VerifiedTokens,
    revocations: &RevocationView,
    token: &str,
    now: DateTime<Utc>,
) -> Option<Arc<AccessClaims>> {
    match cache.verify(verifier, &ring.keys, token, now) {
        Ok(claims) if !revocations.is_access_token_revoked(&claims) => Some(claims),
        Ok(_) => None,
        Err(rejection) => {
            tracing::debug!(%rejection, "access token rejected");
            None
        }
    }
}

impl App {
    /// Validates a presented credential: signature or hash, expiry, revocation. No database query
    /// for a valid access token, nor for an API key already cached.
    pub async fn validate_credential(&self, token: &str) -> Result<Option<ActiveCredential>> {
        if crate::api_keys::format::looks_like_api_key(token) {
            return Ok(self.validate_api_key(token).await?.map(ActiveCredential::ApiKey));
        }
        let Some(claims) = check_access_token(
            &self.verifier,
            &self.keys.current(),
            &self.verified_tokens,
            &self.revocations,
            token,
            self.clock.now(),
        ) else {
            return Ok(None);
        };
        // The rare path is boxed so the common one does not carry a database call's state.
        if !self.feed.is_synced() && Box::pin(self.access_token_revoked_in_store(&claims)).await? {
            return Ok(None);
        }
        Ok(Some(ActiveCredential::AccessToken(claims)))
    }

    /// Like [`App::authenticate`], for calls that manage the account: API keys are refused.
    pub async fn authenticate_user(&self, bearer: Option<&str>) -> Result<Caller> {
        let caller = self.authenticate(bearer).await?;
        caller.require_user_session()?;
        Ok(caller)
    }

    /// The check of a replica that cannot prove its view current: Postgres, the record. When
    /// Postgres is unreachable too this is `Unavailable`, never a guess (security rule 7).
    async fn access_token_revoked_in_store(&self, claims: &AccessClaims) -> Result<bool> {
        let mut conn = crate::store::conn(&self.pool).await?;
        let now = self.clock.now();
        Ok(crate::store::revocations::access_token_revoked(
            &mut conn,
            &claims.sid,
            &claims.jti,
            &claims.sub,
            claims.iat,
            now,
        )
        .await?)
    }

    /// The caller behind a bearer credential; `Unauthenticated` when it is missing or not live.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller> {
        let token = bearer.ok_or(Error::Unauthenticated)?;
        match self.validate_credential(token).await? {
            Some(ActiveCredential::AccessToken(claims)) => Ok(Caller {
                user_id: claims.user_id().ok_or(Error::Unauthenticated)?,
                username: claims.username.clone(),
                roles: claims.roles.clone(),
                scopes: claims.scope.split_whitespace().map(str::to_string).collect(),
                credential: Credential::AccessToken {
                    session_id: claims.session_id().ok_or(Error::Unauthenticated)?,
                    jti: claims.jti.clone(),
                },
            }),
            Some(ActiveCredential::ApiKey(key)) => Ok(Caller {
                user_id: key.user_id,
                username: key.username.clone(),
                // An API key holds its scopes and no role, whoever owns it.
                roles: Vec::new(),
                scopes: key.scopes.clone(),
                credential: Credential::ApiKey { key_id: key.id },
            }),
            None => Err(Error::Unauthenticated),
        }
    }
}
