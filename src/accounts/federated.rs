//! Sign-in with an OpenID provider, and the rules that link a provider's identity to an account.
//! The identity is (issuer, `sub`); an email address only ever links a *first* sign-in, and only
//! when both sides verified it:
//!
//! - an identity already linked signs in to its account (the account's lock, deactivation and
//!   verification rules apply as for `Login`);
//! - otherwise, when an account has the address: it is linked if the provider is trusted for
//!   email (`AUTHD_OIDC_<NAME>_TRUST_EMAIL`), its token says `email_verified`, and the account's
//!   own address is verified; else the answer is `ACCOUNT_LINK_REQUIRED`;
//! - otherwise, when the provider vouches for the address (trusted, `email_verified`), a new
//!   account is made, without a password; when it does not, the answer is
//!   `ACCOUNT_LINK_REQUIRED` too (the same as when an account exists, so it tells nothing), and
//!   the person registers, verifies the address and links the provider. An address nobody
//!   vouched for is never claimed for an identity: that would let whoever controls the claim
//!   hold the account the real owner later resets into (pre-hijacking).

use super::{Accounts, LoggedIn};
use crate::audit::Event;
use crate::config::ProviderSettings;
use crate::domain::{Email, Role};
use crate::error::{Error, Result};
use crate::identity::{Caller, ClientInfo};
use crate::sessions::SignIn;
use crate::store::{self, StoreError, identities::IdentityRow, users::NewUser, users::UserRow};
use authd_client::id_token::IdClaims;
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// A sign-in with a provider, and whether it made the account.
pub struct ProviderLogin {
    pub logged_in: LoggedIn,
    pub created: bool,
}

/// The constraint that allows one identity per provider per account.
const ONE_PER_PROVIDER: &str = "user_identities_user_id_provider_key";

/// The issuer identities of `provider` are recorded under: as configured, without a trailing
/// slash (so adding or dropping one in the settings keeps every link).
pub(crate) fn canonical_issuer(provider: &ProviderSettings) -> &str {
    provider.issuer.trim_end_matches('/')
}

/// How many usernames are tried for a new account before giving up.
const USERNAME_ATTEMPTS: usize = 8;

impl Accounts {
    /// Records a refused ID token (it did not verify) in the audit trail, as a failed login.
    pub async fn provider_token_refused(&self, provider: &ProviderSettings, client: &ClientInfo) {
        let event = Event::failure("login.failed")
            .client(client)
            .detail("reason", "id_token")
            .detail("provider", provider.name.clone());
        self.audit_log.record(event).await;
    }

    /// The providers each of these users has linked, by name (for `User.linked_providers`).
    pub async fn linked_providers(&self, users: &[Uuid]) -> Result<HashMap<Uuid, Vec<String>>> {
        let mut conn = store::conn(&self.pool).await?;
        Ok(store::identities::providers_of(&mut conn, users).await?)
    }

    /// Links an identity at `provider` (its claims verified) to the caller's own account, once
    /// the caller proved again that the account is theirs: a stolen access token alone must not
    /// add a way in.
    pub async fn link_provider(
        &self,
        caller: &Caller,
        provider: &ProviderSettings,
        claims: &IdClaims,
        current_password: Option<&str>,
        client: &ClientInfo,
    ) -> Result<()> {
        caller.require_user_session()?;
        let user = {
            let mut conn = store::conn(&self.pool).await?;
            store::users::find(&mut conn, caller.user_id)
                .await?
                .ok_or(Error::Unauthenticated)?
        };
        if let Err(e) = self
            .confirm_owner(caller, &user, current_password, "current_password")
            .await
        {
            let refused = Event::failure("provider.link_failed")
                .user(user.id)
                .client(client)
                .detail("provider", provider.name.clone());
            self.audit_log.record(refused).await;
            return Err(e);
        }
        const ELSEWHERE: &str = "this identity is linked to another account";
        let issuer = canonical_issuer(provider);
        let now = self.clock.now();
        let email = claims.email.as_deref().and_then(|e| Email::parse(e).ok());
        let row = identity_row(provider, claims, user.id, email.as_ref(), now);
        let mut conn = store::conn(&self.pool).await?;
        let linked = conn
            .transaction::<_, StoreError, _>(async |conn| {
                // The account as it is now, under its lock: a reset, a lock or a deactivation
                // since the proof above wins (and the proof's password must still be the one).
                if super::lock_standing(conn, caller, Some(user.password_hash.as_deref()), now)
                    .await?
                    .is_none()
                {
                    return Ok(Err(Error::Unauthenticated));
                }
                if let Some(existing) = store::identities::find(conn, issuer, &claims.sub).await? {
                    return Ok(if existing.user_id == user.id {
                        Ok(false)
                    } else {
                        Err(Error::FailedPrecondition(ELSEWHERE))
                    });
                }
                // In a savepoint: a conflict rolls back only the insert, not the lock.
                let inserted = conn
                    .transaction::<_, StoreError, _>(async |conn| store::identities::insert(conn, &row).await)
                    .await;
                match inserted {
                    Ok(()) => {}
                    Err(StoreError::Conflict(c)) if c == ONE_PER_PROVIDER => {
                        return Ok(Err(Error::FailedPrecondition(
                            "the account has an identity at this provider already: unlink it first",
                        )));
                    }
                    Err(StoreError::Conflict(_)) => return Ok(Err(Error::FailedPrecondition(ELSEWHERE))),
                    Err(e) => return Err(e),
                }
                store::identities::forget_unlink(conn, user.id, issuer, &claims.sub).await?;
                Ok(Ok(true))
            })
            .await??;
        if !linked {
            return Ok(());
        }
        drop(conn);
        self.audit_log
            .record(succeeded("provider.linked", &user, client, provider))
            .await;
        Ok(())
    }

    /// Unlinks the caller's identity at the provider named `provider`, unless it is the account's
    /// last way to sign in.
    /// `configured` names the providers configured now: a link to one no longer configured is
    /// no way to sign in.
    pub async fn unlink_provider(
        &self,
        caller: &Caller,
        provider: &str,
        configured: &[&str],
        client: &ClientInfo,
    ) -> Result<()> {
        let now = self.clock.now();
        caller.require_user_session()?;
        let mut conn = store::conn(&self.pool).await?;
        let unlinked = conn
            .transaction::<_, StoreError, _>(async |conn| {
                // Serialised with other changes to the account (a second unlink, a new password).
                let Some(user) = store::users::lock(conn, caller.user_id).await? else {
                    return Ok(Err(Error::Unauthenticated));
                };
                let linked = store::identities::providers_of(conn, &[user.id])
                    .await?
                    .remove(&user.id)
                    .unwrap_or_default();
                if !linked.iter().any(|p| p == provider) {
                    return Ok(Err(Error::NotFound("provider link")));
                }
                let other_ways = linked.iter().filter(|p| *p != provider && configured.contains(&p.as_str())).count();
                if user.password_hash.is_none() && other_ways == 0 {
                    return Ok(Err(Error::FailedPrecondition(
                        "it is the account's only way to sign in: set a password (reset it) or link another provider first",
                    )));
                }
                store::identities::delete(conn, user.id, provider, now).await?;
                Ok(Ok(user))
            })
            .await??;
        drop(conn);
        let event = Event::success("provider.unlinked")
            .user(unlinked.id)
            .client(client)
            .detail("provider", provider.to_string());
        self.audit_log.record(event).await;
        Ok(())
    }

    /// Signs in with verified ID-token claims of `provider` (see the module's rules).
    pub async fn login_with_provider(
        &self,
        provider: &ProviderSettings,
        claims: &IdClaims,
        device_name: Option<&str>,
        client: &ClientInfo,
    ) -> Result<ProviderLogin> {
        let device_name = super::checked_device_name(device_name)?;
        // A first sign-in racing another for the same identity meets its row: once more finds it.
        match self.provider_login_once(provider, claims, device_name, client).await {
            Err(Error::AlreadyExists(_)) => self.provider_login_once(provider, claims, device_name, client).await,
            other => other,
        }
    }

    async fn provider_login_once(
        &self,
        provider: &ProviderSettings,
        claims: &IdClaims,
        device_name: Option<&str>,
        client: &ClientInfo,
    ) -> Result<ProviderLogin> {
        let now = self.clock.now();
        let failed = |reason: &'static str| {
            Event::failure("login.failed")
                .client(client)
                .detail("reason", reason)
                .detail("provider", provider.name.clone())
        };
        let email = claims.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
        let mut conn = store::conn(&self.pool).await?;
        if let Some(identity) = store::identities::find(&mut conn, canonical_issuer(provider), &claims.sub).await? {
            let user = store::users::find(&mut conn, identity.user_id)
                .await?
                .ok_or(Error::Unauthenticated)?;
            drop(conn);
            self.may_sign_in(&user, now, &failed).await?;
            let mut conn = store::conn(&self.pool).await?;
            store::identities::record_login(&mut conn, identity.id, email, now).await?;
            drop(conn);
            return self
                .provider_session(provider, user, device_name, client, now, false)
                .await;
        }
        let Some(email) = email.and_then(|e| Email::parse(e).ok()) else {
            self.audit_log.record(failed("no_email")).await;
            return Err(Error::FailedPrecondition(
                "the provider shared no email address: sign in to your account and link the provider",
            ));
        };
        let vouched = provider.trust_email && claims.email_verified == Some(true);
        if let Some(user) = store::users::find_by_email(&mut conn, email.normalized()).await? {
            // An identity this account unlinked comes back only through LinkProvider.
            let unlinked =
                store::identities::was_unlinked(&mut conn, user.id, canonical_issuer(provider), &claims.sub).await?;
            if !(vouched && user.email_verified) || unlinked {
                self.audit_log.record(failed("link_required").user(user.id)).await;
                return Err(Error::LinkRequired);
            }
            drop(conn);
            self.may_sign_in(&user, now, &failed).await?;
            let mut conn = store::conn(&self.pool).await?;
            match store::identities::insert(&mut conn, &identity_row(provider, claims, user.id, Some(&email), now))
                .await
            {
                Ok(()) => {}
                // The account has another identity at this provider already.
                Err(StoreError::Conflict(c)) if c == ONE_PER_PROVIDER => return Err(Error::LinkRequired),
                Err(StoreError::Conflict(_)) => return Err(Error::AlreadyExists("identity")),
                Err(e) => return Err(e.into()),
            }
            drop(conn);
            self.audit_log
                .record(succeeded("provider.linked", &user, client, provider))
                .await;
            return self
                .provider_session(provider, user, device_name, client, now, false)
                .await;
        }
        drop(conn);
        if !vouched {
            self.audit_log.record(failed("address_not_vouched")).await;
            return Err(Error::LinkRequired);
        }
        let user = self.create_federated_user(provider, claims, &email, now).await?;
        self.may_sign_in(&user, now, &failed).await?;
        self.audit_log
            .record(succeeded("user.registered", &user, client, provider))
            .await;
        self.provider_session(provider, user, device_name, client, now, true)
            .await
    }

    /// The rules `Login` applies after the password, for a sign-in with a provider.
    async fn may_sign_in(
        &self,
        user: &UserRow,
        now: DateTime<Utc>,
        failed: &(dyn Fn(&'static str) -> Event + Sync),
    ) -> Result<()> {
        // A lockout after failed passwords bars passwords, not this sign-in; an administrator's
        // lock bars both.
        let locked = user.locked_until.is_some_and(|until| until > now)
            && user.lock_reason.as_deref() != Some(store::users::LOCKOUT);
        let refusal = if locked {
            Some("locked")
        } else if !user.active {
            Some("inactive")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.audit_log.record(failed(reason).user(user.id)).await;
            return Err(Error::Unauthenticated);
        }
        if self.policy.require_verified_email && !user.email_verified {
            self.audit_log.record(failed("email_not_verified").user(user.id)).await;
            return Err(Error::FailedPrecondition("email address not verified"));
        }
        Ok(())
    }

    async fn provider_session(
        &self,
        provider: &ProviderSettings,
        user: UserRow,
        device_name: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
        created: bool,
    ) -> Result<ProviderLogin> {
        let event = succeeded("login.succeeded", &user, client, provider);
        let tokens = self
            .sessions
            .start_session(SignIn {
                user: &user,
                verified_hash: user.password_hash.as_deref(),
                device_name,
                client,
                now,
                honour_lockout: false,
                event,
                device: self.devices.sign_in(user.id, client, created),
            })
            .await?;
        Ok(ProviderLogin {
            logged_in: LoggedIn {
                user,
                tokens,
                linked_providers: None,
            },
            created,
        })
    }

    /// A new account for a first sign-in: no password, a username derived from what the
    /// provider shared and made unique, and the address the provider vouched for, verified.
    async fn create_federated_user(
        &self,
        provider: &ProviderSettings,
        claims: &IdClaims,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<UserRow> {
        let base = username_base(claims, email);
        let mut conn = store::conn(&self.pool).await?;
        for attempt in 0..USERNAME_ATTEMPTS {
            let username = match attempt {
                0 => base.clone(),
                _ => format!("{base}-{:04}", rand::random::<u16>() % 10_000),
            };
            let new = NewUser {
                id: Uuid::now_v7(),
                email: email.as_str(),
                email_normalized: email.normalized(),
                username: &username,
                username_normalized: &username.to_ascii_lowercase(),
                password_hash: None,
                roles: Role::names(&[Role::User]),
                created_at: now,
                updated_at: now,
            };
            let identity = identity_row(provider, claims, new.id, Some(email), now);
            let made = conn
                .transaction::<_, StoreError, _>(async |conn| {
                    let user = store::users::insert(conn, &new).await?;
                    store::users::mark_email_verified(conn, user.id, now).await?;
                    store::identities::insert(conn, &identity).await?;
                    store::users::find(conn, user.id).await.map(|u| u.unwrap_or(user))
                })
                .await;
            match made {
                Ok(user) => return Ok(user),
                Err(StoreError::Conflict(c)) if c.contains("username") => continue,
                // The address or the identity was taken meanwhile: the caller looks again.
                Err(StoreError::Conflict(_)) => return Err(Error::AlreadyExists("account")),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::internal("no free username for a new account"))
    }
}

/// A success of `kind` for `user` through `provider`, for the audit trail.
fn succeeded(kind: &'static str, user: &UserRow, client: &ClientInfo, provider: &ProviderSettings) -> Event {
    Event::success(kind)
        .user(user.id)
        .client(client)
        .detail("provider", provider.name.clone())
}

fn identity_row(
    provider: &ProviderSettings,
    claims: &IdClaims,
    user_id: Uuid,
    email: Option<&Email>,
    now: DateTime<Utc>,
) -> IdentityRow {
    IdentityRow {
        id: Uuid::now_v7(),
        user_id,
        provider: provider.name.clone(),
        issuer: canonical_issuer(provider).to_string(),
        subject: claims.sub.clone(),
        email: email.map(|e| e.as_str().to_string()),
        created_at: now,
        last_login_at: Some(now),
    }
}

/// A username from what the provider shared: its preferred name, else the address's local part,
/// kept to the characters usernames allow, 3 to 24 long.
fn username_base(claims: &IdClaims, email: &Email) -> String {
    let source = claims
        .preferred_username
        .as_deref()
        .filter(|s| !s.contains('@'))
        .unwrap_or_else(|| email.as_str().split('@').next().unwrap_or_default());
    let mut name: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect::<String>()
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_ascii_lowercase();
    name.truncate(24);
    if name.len() < 3 {
        name = format!("user{name}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(preferred: Option<&str>) -> IdClaims {
        IdClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: vec!["a".into()],
            azp: None,
            exp: 0,
            iat: 0,
            nbf: None,
            nonce: None,
            email: None,
            email_verified: None,
            is_private_email: None,
            name: None,
            preferred_username: preferred.map(str::to_string),
        }
    }

    #[test]
    fn usernames_are_derived_within_the_rules() {
        let email = Email::parse("Ada.Lovelace+x@Example.com").unwrap();
        assert_eq!(username_base(&claims(None), &email), "ada.lovelacex");
        assert_eq!(username_base(&claims(Some("__Grace")), &email), "grace");
        assert_eq!(username_base(&claims(Some("a@b.c")), &email), "ada.lovelacex");
        let short = Email::parse("x@example.com").unwrap();
        assert_eq!(username_base(&claims(None), &short), "userx");
        let long = Email::parse(&format!("{}@example.com", "y".repeat(60))).unwrap();
        assert_eq!(username_base(&claims(None), &long).len(), 24);
        for name in ["ada.lovelacex", "grace", "userx"] {
            assert!(crate::domain::Username::parse(name).is_ok(), "{name}");
        }
    }
}
