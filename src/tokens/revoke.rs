//! RFC 7009 revocation of any credential authd issued: OK for anything unknown, and a caller may
//! revoke only credentials of their own unless they are an administrator. Revoking what is
//! already revoked changes nothing: no row, no feed message, no stream event.

use crate::app::App;
use crate::crypto::token_hash;
use crate::error::Result;
use crate::identity::Caller;
use crate::revocation::{Revocation, RevocationKind, StoredRevocation};
use crate::store;

impl App {
    pub async fn revoke_token(&self, caller: &Caller, token: &str) -> Result<()> {
        if token.is_empty() {
            return Ok(());
        }
        let may_revoke = |owner: uuid::Uuid| owner == caller.user_id || caller.is_admin();
        if crate::api_keys::format::looks_like_api_key(token) {
            if let Some(key) = self.validate_api_key(token).await?
                && may_revoke(key.user_id)
            {
                self.revoke_api_key_of(key.user_id, key.id).await?;
            }
            return Ok(());
        }
        let now = self.clock.now();
        if let Ok(claims) = self.issuer.verify(&self.keys.current(), token, now) {
            if self.revocations.is_access_token_revoked(&claims) {
                return Ok(());
            }
            if let Some(owner) = claims.user_id().filter(|owner| may_revoke(*owner)) {
                let expires_at = chrono::DateTime::from_timestamp(claims.exp + crate::tokens::jwt::LEEWAY_SECS + 60, 0)
                    .unwrap_or(now);
                let revocation = Revocation {
                    kind: RevocationKind::Token,
                    subject_id: claims.jti.clone(),
                    user_id: Some(owner),
                    created_at: now,
                    expires_at,
                };
                let mut conn = store::conn(&self.pool).await?;
                // Another replica may have recorded it already: then it spreads it too.
                if store::revocations::insert_once(&mut conn, &revocation.to_row()).await? {
                    self.apply_revocations(&[revocation]);
                }
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
            self.end_sessions(&[session.id], session.user_id).await?;
        }
        Ok(())
    }
}
