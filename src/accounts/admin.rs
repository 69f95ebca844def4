//! What administrators do to other accounts: list and read them, change roles and standing,
//! lock, unlock and delete. Every change that lowers what an account may do revokes what it
//! holds (its tokens carry its roles, and a lock or deletion must take effect at once).

use super::Accounts;
use crate::audit::Event;
use crate::domain::{Page, Role, UserId};
use crate::error::{Error, Result};
use crate::identity::{Caller, ClientInfo};
use crate::store::{self, StoreError, users::UserRow};
use diesel_async::AsyncConnection;
use uuid::Uuid;

/// `lock_reason` of a lock set by an administrator; only `UnlockUser` lifts it.
const ADMIN_LOCK: &str = "admin";

fn require_admin(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::denied("role admin required"))
    }
}

fn user_id(text: &str) -> Result<Uuid> {
    UserId::parse(text).map(UserId::uuid)
}

fn not_yourself(caller: &Caller, target: Uuid, what: &'static str) -> Result<()> {
    if caller.user_id == target {
        Err(Error::FailedPrecondition(what))
    } else {
        Ok(())
    }
}

impl Accounts {
    /// A page of users in creation order, optionally those whose email or username starts with
    /// `query`; the token of the next page is empty on the last one.
    pub async fn list_users(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
        query: &str,
    ) -> Result<(Vec<UserRow>, String)> {
        require_admin(caller)?;
        let page = Page::<Uuid>::parse(page_size, page_token)?;
        let prefix = query.trim().to_ascii_lowercase();
        if prefix.chars().count() > 254 {
            return Err(Error::invalid("query", "is too long"));
        }
        // LIKE wildcards in the query match literally.
        let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let mut conn = store::conn(&self.pool).await?;
        let users = store::users::list(
            &mut conn,
            (!escaped.is_empty()).then_some(escaped.as_str()),
            page.after,
            page.fetch(),
        )
        .await?;
        Ok(page.finish(users, |u| u.id.to_string()))
    }

    pub async fn get_user(&self, caller: &Caller, id: &str) -> Result<UserRow> {
        require_admin(caller)?;
        let id = user_id(id)?;
        let mut conn = store::conn(&self.pool).await?;
        store::users::find(&mut conn, id).await?.ok_or(Error::NotFound("user"))
    }

    /// Replaces roles and/or sets the account active or not. Nobody changes their own roles.
    pub async fn update_user(
        &self,
        caller: &Caller,
        id: &str,
        roles: Option<&[String]>,
        active: Option<bool>,
        client: &ClientInfo,
    ) -> Result<UserRow> {
        require_admin(caller)?;
        let id = user_id(id)?;
        let roles = match roles {
            Some(roles) => {
                if caller.user_id == id {
                    return Err(Error::denied("nobody changes their own roles"));
                }
                let parsed = roles.iter().map(|name| {
                    Role::parse(name.trim()).ok_or_else(|| {
                        let shown: String = name.trim().chars().take(32).collect();
                        Error::invalid("roles", format!("`{shown}` is not one of {}", Role::listed()))
                    })
                });
                let mut roles = Role::names(&parsed.collect::<Result<Vec<_>>>()?);
                roles.sort();
                roles.dedup();
                Some(roles)
            }
            None => None,
        };
        if active == Some(false) {
            not_yourself(caller, id, "you cannot deactivate yourself")?;
        }
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let (user, revocations) = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let before = store::users::lock(conn, id).await?.ok_or(StoreError::NotFound)?;
                let mut revoke = false;
                if let Some(roles) = &roles
                    && *roles != before.roles
                {
                    store::users::set_roles(conn, id, roles, now).await?;
                    revoke = true;
                }
                if let Some(active) = active {
                    store::users::set_active(conn, id, active, now).await?;
                    revoke |= !active && before.active;
                }
                let revocations = if revoke {
                    self.revoker.revoke_user_in(conn, id, now).await?
                } else {
                    Vec::new()
                };
                let user = store::users::find(conn, id).await?.ok_or(StoreError::NotFound)?;
                Ok((user, revocations))
            })
            .await
            .map_err(not_found)?;
        self.revoker.apply(&revocations);
        let by = caller.user_id.to_string();
        if roles.is_some() {
            let event = Event::success("user.roles_changed")
                .user(user.id)
                .client(client)
                .detail("by", by.clone());
            self.audit_log.record(event.detail("roles", user.roles.clone())).await;
        }
        if let Some(active) = active {
            let kind = if active { "user.activated" } else { "user.deactivated" };
            let event = Event::success(kind).user(user.id).client(client);
            self.audit_log.record(event.detail("by", by)).await;
        }
        Ok(user)
    }

    /// Locks login (for `duration`, or until unlocked) and ends everything the user holds.
    /// `reason` (at most 200 characters of it) goes to the audit trail.
    pub async fn lock_user(
        &self,
        caller: &Caller,
        id: &str,
        duration: Option<std::time::Duration>,
        reason: &str,
        client: &ClientInfo,
    ) -> Result<UserRow> {
        require_admin(caller)?;
        let id = user_id(id)?;
        not_yourself(caller, id, "you cannot lock yourself")?;
        let now = self.clock.now();
        let until = match duration {
            Some(d) => now + chrono::Duration::from_std(d).map_err(|_| Error::invalid("duration", "is too long"))?,
            None => now + chrono::Duration::days(365 * 100),
        };
        let mut conn = store::conn(&self.pool).await?;
        let (user, revocations) = conn
            .transaction::<_, StoreError, _>(async |conn| {
                store::users::lock(conn, id).await?.ok_or(StoreError::NotFound)?;
                let user = store::users::set_lock(conn, id, Some(until), Some(ADMIN_LOCK), now).await?;
                Ok((user, self.revoker.revoke_user_in(conn, id, now).await?))
            })
            .await
            .map_err(not_found)?;
        self.revoker.apply(&revocations);
        let event = Event::success("user.locked")
            .user(user.id)
            .client(client)
            .detail("by", caller.user_id.to_string());
        let reason: String = reason.chars().take(200).collect();
        self.audit_log.record(event.detail("reason", reason)).await;
        Ok(user)
    }

    /// Lifts any lock, an administrator's or a lockout after failed logins, and forgets the
    /// failures that led to it.
    pub async fn unlock_user(&self, caller: &Caller, id: &str, client: &ClientInfo) -> Result<UserRow> {
        require_admin(caller)?;
        let id = user_id(id)?;
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        store::users::find(&mut conn, id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        // The failure count and the per-account limits go too: the owner signs in at once.
        let user = store::users::set_lock(&mut conn, id, None, None, now).await?;
        drop(conn);
        self.forget_failures(&user).await;
        let event = Event::success("user.unlocked").user(user.id).client(client);
        self.audit_log
            .record(event.detail("by", caller.user_id.to_string()))
            .await;
        Ok(user)
    }

    /// Deletes an account at once, revoking everything it held.
    pub async fn delete_user(&self, caller: &Caller, id: &str, client: &ClientInfo) -> Result<()> {
        require_admin(caller)?;
        let id = user_id(id)?;
        not_yourself(caller, id, "you cannot delete yourself")?;
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let revocations = conn
            .transaction::<_, StoreError, _>(async |conn| {
                store::users::lock(conn, id).await?.ok_or(StoreError::NotFound)?;
                let revocations = self.revoker.revoke_user_in(conn, id, now).await?;
                store::users::delete(conn, &[id]).await?;
                Ok(revocations)
            })
            .await
            .map_err(not_found)?;
        self.revoker.apply(&revocations);
        let event = Event::success("user.deleted").user(id).client(client);
        self.audit_log
            .record(event.detail("by", caller.user_id.to_string()))
            .await;
        Ok(())
    }
}

fn not_found(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => Error::NotFound("user"),
        other => other.into(),
    }
}
