//! The account lifecycle by mail: email verification (and change of address), password reset,
//! and deletion with a grace period.
//!
//! Requests that name an address (`RequestPasswordReset`, `SendVerificationEmail`,
//! `RequestAccountDeletion`) are recorded and answered at once, the same way for every address,
//! and handled afterwards: whether the address has an account shows neither in the answer nor in
//! its timing (security rule 8), and a request once answered is handled even if this replica
//! stops (it stays recorded until a transaction handles it).

use super::Accounts;
use crate::audit::Event;
use crate::crypto::{random_token, token_hash};
use crate::domain::{Email, Password};
use crate::error::{Error, Result};
use crate::identity::{Caller, ClientInfo};
use crate::mail::{self, Enqueued, MailKind, Message, Notice};
use crate::store::{self, StoreError, one_time_tokens::OneTimeTokenRow, users::UserRow};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use std::sync::Arc;
use uuid::Uuid;

/// `lock_reason` of a lock set by failed logins.
pub(crate) use crate::store::users::LOCKOUT;

const RESET_TTL: chrono::Duration = chrono::Duration::minutes(30);
const VERIFY_TTL: chrono::Duration = chrono::Duration::hours(24);
const DELETE_TTL: chrono::Duration = chrono::Duration::hours(1);
/// A mail request not handled after this long was left by a replica that could not.
const LEFT_OVER_AFTER: chrono::Duration = chrono::Duration::seconds(5);

fn lifetime(kind: MailKind) -> (chrono::Duration, &'static str) {
    match kind {
        MailKind::ResetPassword => (RESET_TTL, "30 minutes"),
        MailKind::VerifyEmail => (VERIFY_TTL, "24 hours"),
        MailKind::DeleteAccount => (DELETE_TTL, "1 hour"),
    }
}

/// Where an account stands on its way to deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    None,
    Requested,
    Scheduled(DateTime<Utc>),
}

/// Spends a live token of `kind` and locks its account, in the caller's transaction; `NotFound`
/// for a token that is unknown, expired, used, or of another kind.
async fn spend(
    conn: &mut store::Conn<'_>,
    hash: &[u8],
    kind: MailKind,
    now: DateTime<Utc>,
) -> store::StoreResult<(OneTimeTokenRow, UserRow)> {
    let spent = store::one_time_tokens::consume(conn, hash, kind.as_str(), now)
        .await?
        .ok_or(StoreError::NotFound)?;
    let user = store::users::lock(conn, spent.user_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok((spent, user))
}

/// A token that could not be spent is invalid; other store errors keep their meaning.
fn token_error(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => invalid_token(),
        other => other.into(),
    }
}

fn invalid_token() -> Error {
    Error::invalid("token", "is invalid, expired or already used")
}

/// What a mailed link can still do, read without spending its token (a page shows it before
/// anything is submitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Unknown, spent, superseded or expired.
    Dead,
    /// Not used yet: the person may submit it.
    Open,
    /// A deletion link already used to confirm: the account is purged then, and the link can
    /// still cancel.
    DeletionScheduled(DateTime<Utc>),
}

impl Accounts {
    /// What the link of `kind` carrying `token` can still do. Reads only: a mail scanner that
    /// fetches the link changes nothing.
    pub async fn link_state(&self, token: &str, kind: MailKind) -> Result<LinkState> {
        let hash = token_hash(token.trim());
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let Some(row) = store::one_time_tokens::find(&mut conn, &hash, kind.as_str()).await? else {
            return Ok(LinkState::Dead);
        };
        if row.expires_at <= now {
            return Ok(LinkState::Dead);
        }
        if row.used_at.is_none() {
            return Ok(LinkState::Open);
        }
        if kind != MailKind::DeleteAccount {
            return Ok(LinkState::Dead);
        }
        // As cancelling decides: only the token of the pending request.
        let user = store::users::find(&mut conn, row.user_id).await?;
        let scheduled = user
            .filter(|user| user.deletion_requested_at.is_some_and(|at| row.created_at >= at))
            .and_then(|user| user.deletion_scheduled_for);
        Ok(scheduled.map_or(LinkState::Dead, LinkState::DeletionScheduled))
    }

    pub async fn request_password_reset(self: &Arc<Self>, email: &str) -> Result<()> {
        self.request_mail(Email::parse(email)?, MailKind::ResetPassword).await
    }

    pub async fn send_verification_email(self: &Arc<Self>, email: &str) -> Result<()> {
        self.request_mail(Email::parse(email)?, MailKind::VerifyEmail).await
    }

    pub async fn request_account_deletion(self: &Arc<Self>, email: &str) -> Result<()> {
        self.request_mail(Email::parse(email)?, MailKind::DeleteAccount).await
    }

    /// Records the request (the same one write for every address), answers, and handles it
    /// afterwards: looks the address up and writes the mail. A request this replica cannot
    /// handle (too many waiting, a failed transaction, a kill) stays recorded, and any replica's
    /// [`Accounts::handle_left_over_mail_requests`] takes it.
    async fn request_mail(self: &Arc<Self>, email: Email, kind: MailKind) -> Result<()> {
        let id = {
            let mut conn = store::conn(&self.pool).await?;
            store::mail_requests::insert(&mut conn, kind.as_str(), email.normalized(), self.clock.now()).await?
        };
        let app = self.clone();
        let queued = self.in_background(async move {
            if let Err(e) = app.handle_mail_request(id).await {
                tracing::warn!(kind = kind.as_str(), error = %e.detail(), "could not handle a mail request; it is retried");
            }
        });
        if !queued {
            tracing::info!(
                kind = kind.as_str(),
                "many mail requests waiting; leaving one for the next round"
            );
        }
        Ok(())
    }

    /// Handles every request older than a few seconds that no replica has handled (left by one
    /// that stopped or failed before it could), a batch at a time, oldest first; one that fails
    /// is logged and left for the next round, the others go on. Only the kinds this version
    /// knows: a newer replica's are left to it. Returns how many were handled.
    pub async fn handle_left_over_mail_requests(&self) -> Result<usize> {
        const BATCH: i64 = 20;
        let kinds = MailKind::ALL.map(MailKind::as_str);
        let before = self.clock.now() - LEFT_OVER_AFTER;
        let mut handled = 0;
        let mut after = 0;
        loop {
            let ids = {
                let mut conn = store::conn(&self.pool).await?;
                store::mail_requests::left_over(&mut conn, &kinds, before, after, BATCH).await?
            };
            for &id in &ids {
                match self.handle_mail_request(id).await {
                    Ok(done) => handled += usize::from(done),
                    Err(e) => {
                        tracing::warn!(id, error = %e.detail(), "could not handle a mail request left over; it is retried")
                    }
                }
            }
            match ids.last() {
                Some(&last) if ids.len() as i64 == BATCH => after = last,
                _ => return Ok(handled),
            }
        }
    }

    /// Takes request `id` and, in the same transaction, issues its one-time token and writes its
    /// mail if the address belongs to an account that needs it and the per-address limit allows;
    /// false when another replica has it or had it.
    async fn handle_mail_request(&self, id: i64) -> Result<bool> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let outcome = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let Some(request) = store::mail_requests::take(conn, id).await? else {
                    return Ok(None);
                };
                // Both were checked when the request was recorded, perhaps by another version:
                // left (rolled back) for a replica that can read it.
                let (Some(kind), Ok(email)) = (MailKind::parse(&request.kind), Email::parse(&request.email)) else {
                    return Err(StoreError::Other(format!(
                        "mail request {id} is of a kind or address this version cannot read"
                    )));
                };
                let written = self.mail_one_time_link(conn, &email, kind, now).await?;
                Ok(Some(written.map(|user_id| (kind, user_id))))
            })
            .await?;
        let Some(written) = outcome else {
            return Ok(false);
        };
        if let Some((kind, user_id)) = written {
            if kind == MailKind::DeleteAccount {
                self.audit_log
                    .record(Event::success("account_deletion.requested").user(user_id))
                    .await;
            }
            self.mail_ready.notify_one();
        }
        Ok(true)
    }

    /// Issues a one-time token and writes its mail, in the caller's transaction, if the address
    /// belongs to an account that needs it and the per-address limit allows: the account then.
    async fn mail_one_time_link(
        &self,
        conn: &mut store::Conn<'_>,
        email: &Email,
        kind: MailKind,
        now: DateTime<Utc>,
    ) -> store::StoreResult<Option<Uuid>> {
        let Some(found) = store::users::find_by_email(conn, email.normalized()).await? else {
            return Ok(None);
        };
        // One request per account at a time, so the per-address limit counts exactly.
        let Some(user) = store::users::lock(conn, found.id).await? else {
            return Ok(None);
        };
        if kind == MailKind::VerifyEmail && user.email_verified {
            return Ok(None);
        }
        let written = self.write_one_time_link(conn, &user, &user.email, kind, now).await?;
        if written && kind == MailKind::DeleteAccount {
            store::users::set_deletion(conn, user.id, Some(now), user.deletion_scheduled_for).await?;
        }
        Ok(written.then_some(user.id))
    }

    /// The token row and its mail, in the caller's transaction; false when throttled.
    async fn write_one_time_link(
        &self,
        conn: &mut store::Conn<'_>,
        user: &UserRow,
        to: &str,
        kind: MailKind,
        now: DateTime<Utc>,
    ) -> store::StoreResult<bool> {
        let (ttl, valid_for) = lifetime(kind);
        let token = random_token();
        let message = Message::new(kind, to, &self.policy.public_url, &token, valid_for);
        let policy = &self.policy;
        let enqueued = mail::enqueue(
            conn,
            &policy.key_encryption_key,
            kind.as_str(),
            &message,
            policy.mail_rate_per_hour,
            now,
        )
        .await?;
        if enqueued == Enqueued::Throttled {
            tracing::info!(kind = kind.as_str(), "mail limit reached for an address; not sending");
            return Ok(false);
        }
        let row = OneTimeTokenRow {
            token_hash: token_hash(&token),
            user_id: user.id,
            purpose: kind.as_str().to_string(),
            email: to.to_string(),
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
        };
        store::one_time_tokens::replace(conn, &row).await?;
        Ok(true)
    }

    /// A notice to the account's owner, in the caller's transaction (throttled like any mail).
    async fn write_notice(
        &self,
        conn: &mut store::Conn<'_>,
        notice: Notice,
        to: &str,
        new_address: &str,
        now: DateTime<Utc>,
    ) -> store::StoreResult<()> {
        let message = Message::notice(notice, to, new_address);
        let policy = &self.policy;
        let kek = &policy.key_encryption_key;
        mail::enqueue(conn, kek, notice.as_str(), &message, policy.mail_rate_per_hour, now).await?;
        Ok(())
    }

    /// Starts a change of address, once the caller has given the account's password again: the
    /// new address gets a verification link, the current one a notice, and the account keeps its
    /// current address until the link is followed.
    pub async fn request_email_change(
        &self,
        caller: &Caller,
        new_email: &str,
        current_password: Option<&str>,
        client: &ClientInfo,
    ) -> Result<()> {
        let requested = self.start_email_change(caller, new_email, current_password).await;
        let event = match &requested {
            Ok(()) => Event::success("email.change_requested"),
            Err(_) => Event::failure("email.change_requested"),
        };
        self.audit_log.record(event.user(caller.user_id).client(client)).await;
        if requested.is_ok() {
            self.watch_email_change(caller.user_id, client).await;
        }
        requested
    }

    async fn start_email_change(&self, caller: &Caller, new_email: &str, current_password: Option<&str>) -> Result<()> {
        let email = Email::parse(new_email)?;
        let owner = self.get_me(caller).await?;
        self.confirm_owner(caller, &owner, current_password, "current_password")
            .await?;
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let written = conn
            .transaction::<_, StoreError, _>(async |conn| {
                // Nothing (a reset, a lock, a revocation) changed the account since the password
                // was checked; else no link goes out.
                let Some(user) = super::lock_standing(conn, caller, Some(owner.password_hash.as_deref()), now).await?
                else {
                    return Err(StoreError::NotFound);
                };
                // An address taken by another account gets no mail, and the caller the same answer
                // (the conflict would surface only when a link is followed).
                if user.email_normalized == email.normalized()
                    || store::users::find_by_email(conn, email.normalized()).await?.is_some()
                {
                    return Ok(None);
                }
                let written = self
                    .write_one_time_link(conn, &user, email.as_str(), MailKind::VerifyEmail, now)
                    .await?;
                if written {
                    self.write_notice(conn, Notice::EmailChangeRequested, &user.email, email.as_str(), now)
                        .await?;
                }
                Ok(Some(written))
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::Unauthenticated,
                other => other.into(),
            })?;
        if written == Some(true) {
            self.mail_ready.notify_one();
        }
        Ok(())
    }

    /// Marks the address of a verification token verified (or moves the account to it).
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<()> {
        let hash = token_hash(token.trim());
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let user_id = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let (spent, user) = spend(conn, &hash, MailKind::VerifyEmail, now).await?;
                let email = Email::parse(&spent.email).map_err(|_| StoreError::NotFound)?;
                if email.normalized() == user.email_normalized {
                    store::users::mark_email_verified(conn, user.id, now)
                        .await
                        .map(|()| user.id)
                } else {
                    store::users::set_verified_email(conn, user.id, email.as_str(), email.normalized(), now).await?;
                    // Links mailed to the old address die with it (a spent deletion link too, which
                    // could otherwise still cancel).
                    for kind in [MailKind::ResetPassword, MailKind::DeleteAccount, MailKind::VerifyEmail] {
                        store::one_time_tokens::retire_all(conn, user.id, kind.as_str(), now).await?;
                    }
                    // The old address learns where its account went.
                    self.write_notice(conn, Notice::EmailChanged, &user.email, email.as_str(), now)
                        .await?;
                    Ok(user.id)
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => invalid_token(),
                StoreError::Conflict(_) => Error::AlreadyExists("email"),
                other => other.into(),
            })?;
        self.audit_log
            .record(Event::success("email.verified").user(user_id).client(client))
            .await;
        Ok(())
    }

    /// Sets a new password with a reset token, then ends every session and revokes every earlier
    /// token of the account (the user-wide path).
    pub async fn reset_password(&self, token: &str, new_password: &str, client: &ClientInfo) -> Result<()> {
        let password = Password::parse(new_password, "new_password")?;
        let token = token_hash(token.trim());
        let now = self.clock.now();
        // The token is looked up first: a junk token costs one indexed read, never a hash nor a
        // strength estimate (either would let anyone burn the hashing threads).
        let owner = {
            let mut conn = store::conn(&self.pool).await?;
            let pending = store::one_time_tokens::find_live(&mut conn, &token, MailKind::ResetPassword.as_str(), now)
                .await?
                .ok_or_else(invalid_token)?;
            store::users::find(&mut conn, pending.user_id)
                .await?
                .ok_or_else(invalid_token)?
        };
        // Checked before the token is spent, so a refused password leaves the link usable.
        self.check_password_policy(&password, "new_password", &[&owner.email, &owner.username])
            .await?;
        let hash = self.hasher.hash(&password).await?;
        let mut conn = store::conn(&self.pool).await?;
        let revocations = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let (spent, user) = spend(conn, &token, MailKind::ResetPassword, now).await?;
                store::users::set_password_hash(conn, spent.user_id, &hash, now).await?;
                // A lockout (what an attacker can cause) ends with the reset, and so does the
                // count of failures; an administrator's lock does not.
                if user.lock_reason.as_deref() == Some(LOCKOUT) {
                    store::users::set_lock(conn, user.id, None, None, now).await?;
                } else {
                    store::users::clear_failed_logins(conn, user.id).await?;
                }
                // Following the link proved control of the address.
                store::users::mark_email_verified(conn, spent.user_id, now).await?;
                Ok((user.id, self.revoker.revoke_user_in(conn, spent.user_id, now).await?))
            })
            .await
            .map_err(token_error)?;
        let (user_id, revocations) = revocations;
        self.revoker.apply(&revocations);
        self.forget_failures(&owner).await;
        self.audit_log
            .record(Event::success("password.reset").user(user_id).client(client))
            .await;
        Ok(())
    }

    /// Schedules the deletion `AUTHD_ACCOUNT_DELETION_GRACE` ahead and ends every session.
    /// Returns when the account will be purged.
    pub async fn confirm_account_deletion(&self, token: &str, client: &ClientInfo) -> Result<DateTime<Utc>> {
        let token = token_hash(token.trim());
        let now = self.clock.now();
        let scheduled_for =
            now + chrono::Duration::from_std(self.policy.account_deletion_grace).map_err(Error::internal)?;
        let mut conn = store::conn(&self.pool).await?;
        let revocations = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let (spent, user) = spend(conn, &token, MailKind::DeleteAccount, now).await?;
                store::users::set_deletion(
                    conn,
                    user.id,
                    user.deletion_requested_at.or(Some(now)),
                    Some(scheduled_for),
                )
                .await?;
                // The mailed link can cancel for the whole grace period.
                store::one_time_tokens::extend(conn, &spent.token_hash, scheduled_for).await?;
                Ok((user.id, self.revoker.revoke_user_in(conn, user.id, now).await?))
            })
            .await
            .map_err(token_error)?;
        let (user_id, revocations) = revocations;
        self.revoker.apply(&revocations);
        let event = Event::success("account_deletion.confirmed")
            .user(user_id)
            .client(client);
        self.audit_log
            .record(event.detail("scheduled_for", scheduled_for.to_rfc3339()))
            .await;
        Ok(scheduled_for)
    }

    /// Cancels a requested or scheduled deletion, with the mailed token or as the signed-in user.
    pub async fn cancel_account_deletion(
        &self,
        token: Option<&str>,
        caller: Option<&Caller>,
        client: &ClientInfo,
    ) -> Result<()> {
        let now = self.clock.now();
        let token = token.map(str::trim).filter(|t| !t.is_empty()).map(token_hash);
        if token.is_none() && caller.is_none() {
            return Err(Error::Unauthenticated);
        }
        let mut conn = store::conn(&self.pool).await?;
        let user_id = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let user_id = match &token {
                    Some(hash) => {
                        let row = store::one_time_tokens::find(conn, hash, MailKind::DeleteAccount.as_str()).await?;
                        let row = row.filter(|row| row.expires_at > now).ok_or(StoreError::NotFound)?;
                        let user = store::users::lock(conn, row.user_id)
                            .await?
                            .ok_or(StoreError::NotFound)?;
                        // Only the token of the pending request: an older one cannot cancel a newer one.
                        if user.deletion_requested_at.is_none_or(|at| row.created_at < at) {
                            return Err(StoreError::NotFound);
                        }
                        user.id
                    }
                    None => {
                        let caller = caller.expect("checked above");
                        store::users::lock(conn, caller.user_id)
                            .await?
                            .ok_or(StoreError::NotFound)?
                            .id
                    }
                };
                store::users::set_deletion(conn, user_id, None, None).await?;
                store::one_time_tokens::retire_all(conn, user_id, MailKind::DeleteAccount.as_str(), now).await?;
                Ok(user_id)
            })
            .await
            .map_err(token_error)?;
        self.audit_log
            .record(
                Event::success("account_deletion.cancelled")
                    .user(user_id)
                    .client(client),
            )
            .await;
        Ok(())
    }

    pub async fn account_deletion_status(&self, caller: &Caller) -> Result<DeletionState> {
        let user = self.get_me(caller).await?;
        let now = self.clock.now();
        Ok(match (user.deletion_scheduled_for, user.deletion_requested_at) {
            (Some(at), _) => DeletionState::Scheduled(at),
            (None, Some(requested)) if requested + DELETE_TTL > now => DeletionState::Requested,
            _ => DeletionState::None,
        })
    }

    /// Deletes the accounts whose grace has passed, revoking everything they still hold (a login
    /// during the grace got fresh tokens); safe with several replicas at once.
    pub async fn purge_deleted_accounts(&self) -> Result<Vec<Uuid>> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let (purged, revocations) = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let due = store::users::lock_due_deletions(conn, now, 100).await?;
                let mut revocations = Vec::new();
                for id in &due {
                    revocations.extend(self.revoker.revoke_user_in(conn, *id, now).await?);
                }
                store::users::delete(conn, &due).await?;
                Ok((due, revocations))
            })
            .await?;
        self.revoker.apply(&revocations);
        for id in &purged {
            tracing::info!(user_id = %id, "purged an account after its deletion grace");
            self.audit_log
                .record(Event::success("account_deletion.purged").user(*id))
                .await;
        }
        Ok(purged)
    }
}
