//! Who is calling: a presented credential (an access token or an API key) checked against the
//! verification core (`authd-client`), the revocation view and the API-key cache, and turned into
//! a [`Caller`]. Also the RFC 7009 revocation of any presented credential, which must first tell
//! what the credential is.

use crate::api_keys::{ActiveApiKey, ApiKeys};
use crate::clock::Clock;
use crate::crypto::token_hash;
use crate::error::{Error, Result};
use crate::identity::{Caller, Credential};
use crate::revocation::{RevocationView, Revoker};
use crate::store::{self, Pool};
use crate::tokens::{AccessClaims, KeyRing, SigningKeys, VerifiedTokens};
use authd_client::TokenRules;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// No credential authd issues is longer; a longer one is no credential.
pub const MAX_CREDENTIAL: usize = 8192;

/// The credential of an `authorization: Bearer <credential>` value; `None` when malformed or
/// longer than any credential authd issues.
pub fn bearer_of(value: &str) -> Option<&str> {
    if value.len() > MAX_CREDENTIAL {
        return None;
    }
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// A credential that is valid and live, as introspection reports it.
#[derive(Clone, Debug)]
pub enum ActiveCredential {
    AccessToken(Arc<AccessClaims>),
    ApiKey(ActiveApiKey),
}

/// The in-process part of checking an access token, with no I/O: verified (or found in the cache
/// of verified tokens) and not revoked in the in-memory view. A replica whose view is not known
/// current must still ask Postgres, which [`Authenticator::validate_credential`] does.
pub fn check_access_token(
    verifier: &TokenRules,
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

/// Checks credentials: the hot path of every authenticated RPC and of `Introspect`.
pub struct Authenticator {
    pool: Pool,
    clock: Clock,
    keys: SigningKeys,
    /// The rules access tokens are verified under (`authd-client`), for this issuer.
    verifier: TokenRules,
    verified: VerifiedTokens,
    revoker: Arc<Revoker>,
    api_keys: Arc<ApiKeys>,
}

impl Authenticator {
    pub fn new(
        pool: Pool,
        clock: Clock,
        keys: SigningKeys,
        verifier: TokenRules,
        verified: VerifiedTokens,
        revoker: Arc<Revoker>,
        api_keys: Arc<ApiKeys>,
    ) -> Self {
        Self {
            pool,
            clock,
            keys,
            verifier,
            verified,
            revoker,
            api_keys,
        }
    }

    /// The rules access tokens of this issuer are verified under.
    pub fn rules(&self) -> &TokenRules {
        &self.verifier
    }

    /// The access tokens already verified (their count and hit rate are reported).
    pub fn verified_tokens(&self) -> &VerifiedTokens {
        &self.verified
    }

    /// Validates a presented credential: signature or hash, expiry, revocation. No database query
    /// for a valid access token, nor for an API key already cached.
    pub async fn validate_credential(&self, token: &str) -> Result<Option<ActiveCredential>> {
        if crate::api_keys::format::looks_like_api_key(token) {
            return Ok(self
                .api_keys
                .validate_api_key(token)
                .await?
                .map(ActiveCredential::ApiKey));
        }
        let Some(claims) = check_access_token(
            &self.verifier,
            &self.keys.current(),
            &self.verified,
            self.revoker.view(),
            token,
            self.clock.now(),
        ) else {
            return Ok(None);
        };
        // The rare path is boxed so the common one does not carry a database call's state.
        if !self.revoker.feed().is_synced() && Box::pin(self.access_token_revoked_in_store(&claims)).await? {
            return Ok(None);
        }
        Ok(Some(ActiveCredential::AccessToken(claims)))
    }

    /// Like [`Authenticator::authenticate`], for calls that manage the account: API keys are
    /// refused.
    pub async fn authenticate_user(&self, bearer: Option<&str>) -> Result<Caller> {
        let caller = self.authenticate(bearer).await?;
        caller.require_user_session()?;
        Ok(caller)
    }

    /// The check of a replica that cannot prove its view current: Postgres, the record. When
    /// Postgres is unreachable too this is `Unavailable`, never a guess (security rule 7).
    async fn access_token_revoked_in_store(&self, claims: &AccessClaims) -> Result<bool> {
        let mut conn = store::conn(&self.pool).await?;
        let now = self.clock.now();
        Ok(
            store::revocations::access_token_revoked(&mut conn, &claims.sid, &claims.jti, &claims.sub, claims.iat, now)
                .await?,
        )
    }

    /// The caller behind a bearer credential; `Unauthenticated` when it is missing or not live.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller> {
        let token = bearer.ok_or(Error::Unauthenticated)?;
        match self.validate_credential(token).await? {
            Some(ActiveCredential::AccessToken(claims)) => Ok(Caller {
                user_id: claims.user_id().ok_or(Error::Unauthenticated)?,
                username: claims.username.clone(),
                roles: crate::domain::Role::known(&claims.roles),
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

    /// RFC 7009 revocation of any credential authd issued: OK for anything unknown, and a caller
    /// may revoke only credentials of their own unless they are an administrator. Revoking what
    /// is already revoked changes nothing: no row, no feed message, no stream event.
    pub async fn revoke_token(&self, caller: &Caller, token: &str) -> Result<()> {
        if token.is_empty() {
            return Ok(());
        }
        let may_revoke = |owner: uuid::Uuid| owner == caller.user_id || caller.is_admin();
        if crate::api_keys::format::looks_like_api_key(token) {
            if let Some(key) = self.api_keys.validate_api_key(token).await?
                && may_revoke(key.user_id)
            {
                self.revoker.revoke_api_key(key.user_id, key.id).await?;
            }
            return Ok(());
        }
        let now = self.clock.now();
        if let Ok(claims) = self.verifier.verify(&self.keys.current().keys, token, now) {
            if self.revoker.view().is_access_token_revoked(&claims) {
                return Ok(());
            }
            if let Some(owner) = claims.user_id().filter(|owner| may_revoke(*owner)) {
                self.revoker
                    .revoke_access_token(&claims.jti, owner, claims.exp, now)
                    .await?;
            }
            return Ok(());
        }
        // Otherwise it may be a refresh token: revoking it ends its session.
        let session = {
            let mut conn = store::conn(&self.pool).await?;
            match store::sessions::session_of_refresh_token(&mut conn, &token_hash(token)).await? {
                Some(id) => store::sessions::find(&mut conn, id).await?,
                None => None,
            }
        };
        if let Some(session) = session.filter(|s| may_revoke(s.user_id)) {
            self.revoker.end_sessions(&[session.id], session.user_id).await?;
        }
        Ok(())
    }
}
