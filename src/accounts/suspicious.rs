//! Patterns flagged in the audit trail as `suspicious.*` events (with their facts, never a
//! secret) and counted in `authd.audit.suspicious`: many addresses failing at one account's
//! password, a sign-in just after a lockout ended, and a change of address soon after a password
//! reset.

use super::{Accounts, LOCKOUT};
use crate::audit::{AuditLog, Event};
use crate::identity::ClientInfo;
use crate::store::{self, StoreError, users::UserRow};
use chrono::{DateTime, Duration, Utc};
use diesel_async::AsyncConnection;
use std::collections::HashSet;
use uuid::Uuid;

/// Failed logins from this many addresses within [`BURST_WINDOW`] are a burst.
pub(crate) const BURST_ADDRESSES: usize = 5;
pub(crate) const BURST_WINDOW: Duration = Duration::minutes(15);
/// The failures read for it, the account's latest.
const BURST_READ: i64 = 100;
/// The reasons of `login.failed` that count: a password tried (not, say, a right password on an
/// unverified address).
const PASSWORD_FAILURES: [&str; 2] = ["wrong_password", "locked"];
/// A sign-in this soon after a lockout ended, the first since, is flagged.
pub(crate) const AFTER_LOCKOUT: Duration = Duration::minutes(15);
/// A change of address requested this soon after a password reset is flagged.
pub(crate) const AFTER_RESET: Duration = Duration::hours(1);

pub(crate) const FAILED_LOGIN_BURST: &str = "suspicious.failed_login_burst";
pub(crate) const LOGIN_AFTER_LOCKOUT: &str = "suspicious.login_after_lockout";
pub(crate) const EMAIL_CHANGE_AFTER_RESET: &str = "suspicious.email_change_after_reset";

impl Accounts {
    /// After a failed password on `user_id` (recorded already): looks for a burst of them from
    /// many addresses, in the background, once the answer is on its way: the refusal costs the
    /// same for every account (security rule 8), and a failing check fails nothing.
    pub(crate) fn watch_failed_logins(&self, user_id: Uuid, client: &ClientInfo, now: DateTime<Utc>) {
        let (pool, audit_log, client) = (self.pool.clone(), self.audit_log.clone(), client.clone());
        let queued = self.in_background(async move {
            match flag_burst(&pool, &audit_log, user_id, &client, now).await {
                Ok(true) => audit_log.flagged(FAILED_LOGIN_BURST),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for a burst of failed logins"),
            }
        });
        if !queued {
            tracing::info!("many background checks waiting; a failed login is not examined for a burst");
        }
    }

    /// After a password login that opened `session`: flags it if it is the account's first since
    /// a lockout after failed passwords ended, and soon after (`user` as read before the login).
    pub(crate) async fn watch_login_after_lockout(
        &self,
        user: &UserRow,
        session: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) {
        let Some(ended) = user
            .locked_until
            .filter(|_| user.lock_reason.as_deref() == Some(LOCKOUT))
        else {
            return;
        };
        let first_since = user.last_login_at.is_none_or(|at| at < ended);
        if ended > now || now - ended > AFTER_LOCKOUT || !first_since {
            return;
        }
        let event = Event::success(LOGIN_AFTER_LOCKOUT)
            .user(user.id)
            .client(client)
            .detail("lockout_ended_at", ended.to_rfc3339())
            .detail("seconds_after", (now - ended).num_seconds())
            .detail("session_id", session.to_string());
        self.audit_log.flag(event).await;
    }

    /// After a change of address was requested: flags it if the account's password was reset
    /// within the hour before.
    pub(crate) async fn watch_email_change(&self, user_id: Uuid, client: &ClientInfo) {
        let now = self.clock.now();
        let resets = async {
            let mut conn = store::conn(&self.pool).await?;
            store::audit::latest_of_type(&mut conn, user_id, "password.reset", 1).await
        }
        .await;
        let resets = match resets {
            Ok(resets) => resets,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the account's last password reset");
                return;
            }
        };
        let Some(reset) = resets
            .first()
            .filter(|reset| reset.outcome == "success" && now - reset.occurred_at <= AFTER_RESET)
        else {
            return;
        };
        let event = Event::success(EMAIL_CHANGE_AFTER_RESET)
            .user(user_id)
            .client(client)
            .detail("password_reset_at", reset.occurred_at.to_rfc3339())
            .detail("seconds_after", (now - reset.occurred_at).num_seconds());
        self.audit_log.flag(event).await;
    }
}

/// Flags a burst of failed passwords (wrong, or tried while locked) on `user_id` from
/// [`BURST_ADDRESSES`] or more addresses (an IPv6 /64 counts once, as for rate limits) within
/// [`BURST_WINDOW`], once per window: read and written under the account's row lock, so
/// concurrent checks flag it once. Whether it flagged.
async fn flag_burst(
    pool: &store::Pool,
    audit_log: &AuditLog,
    user_id: Uuid,
    client: &ClientInfo,
    now: DateTime<Utc>,
) -> std::result::Result<bool, StoreError> {
    let since = now - BURST_WINDOW;
    let mut conn = store::conn(pool).await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        if store::users::lock(conn, user_id).await?.is_none() {
            return Ok(false);
        }
        let failures = store::audit::latest_failed_logins(conn, user_id, BURST_READ).await?;
        let recent: Vec<_> = failures
            .iter()
            .filter(|f| f.occurred_at > since && PASSWORD_FAILURES.contains(&f.reason.as_deref().unwrap_or_default()))
            .collect();
        let addresses: HashSet<String> = recent
            .iter()
            .filter(|f| f.ip_address.is_some())
            .map(|f| crate::net::address_bucket(f.ip_address.as_deref()))
            .collect();
        if addresses.len() < BURST_ADDRESSES {
            return Ok(false);
        }
        let flags = store::audit::latest_of_type(conn, user_id, FAILED_LOGIN_BURST, 1).await?;
        if flags.first().is_some_and(|flag| flag.occurred_at > since) {
            return Ok(false);
        }
        let event = Event::failure(FAILED_LOGIN_BURST)
            .user(user_id)
            .client(client)
            .detail("failures", recent.len())
            .detail("addresses", addresses.len())
            .detail("window_seconds", BURST_WINDOW.num_seconds())
            .detail("first_at", recent.last().map(|f| f.occurred_at.to_rfc3339()));
        store::audit::insert(conn, &audit_log.row(event)).await?;
        Ok(true)
    })
    .await
}
