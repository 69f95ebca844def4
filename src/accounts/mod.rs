//! Registration, login, profile and password rules.

mod admin;
mod federated;
mod lifecycle;
mod password;
mod suspicious;

pub use federated::ProviderLogin;
use lifecycle::LOCKOUT;
pub use lifecycle::{DeletionState, LinkState};
pub use password::{PasswordHasher, Verified, hash_once};

use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::domain::{Email, Password, Role, Username};
use crate::error::{Error, Result};
use crate::identity::Caller;
use crate::identity::ClientInfo;
use crate::ratelimit::Limits;
use crate::revocation::Revoker;
use crate::secret::Secret;
use crate::sessions::{IssuedTokens, Sessions, SignIn};
use crate::store::{self, Pool, StoreError, users::NewUser, users::UserRow};
use diesel_async::AsyncConnection;
use std::sync::Arc;
use uuid::Uuid;

/// The account rules that come from configuration.
#[derive(Clone, Debug)]
pub struct AccountPolicy {
    pub password_policy: crate::domain::PasswordPolicy,
    /// Keys the digests of unknown identifiers in the audit trail, and the mail outbox.
    pub key_encryption_key: Secret<[u8; 32]>,
    pub lockout_threshold: u32,
    pub lockout_duration: std::time::Duration,
    pub require_verified_email: bool,
    /// Where the links in mail lead.
    pub public_url: String,
    pub mail_rate_per_hour: u32,
    pub account_deletion_grace: std::time::Duration,
    /// `AUTHD_NEW_DEVICE_MAIL`.
    pub new_device_mail: bool,
    /// `AUTHD_SESSIONS_URL`.
    pub sessions_url: Option<String>,
}

impl AccountPolicy {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            password_policy: settings.passwords.policy(),
            key_encryption_key: settings.tokens.key_encryption_key.clone(),
            lockout_threshold: settings.accounts.lockout_threshold,
            lockout_duration: settings.accounts.lockout_duration,
            require_verified_email: settings.accounts.require_verified_email,
            public_url: settings.server.public_url.clone(),
            mail_rate_per_hour: settings.mail.rate_per_hour,
            account_deletion_grace: settings.accounts.deletion_grace,
            new_device_mail: settings.accounts.new_device_mail,
            sessions_url: settings.accounts.sessions_url.clone(),
        }
    }
}

/// Accounts: registration, login, the owner's changes, the mailed lifecycle, and what
/// administrators do to accounts.
pub struct Accounts {
    pool: Pool,
    clock: Clock,
    hasher: PasswordHasher,
    policy: AccountPolicy,
    sessions: Arc<Sessions>,
    revoker: Arc<Revoker>,
    limits: Arc<Limits>,
    audit_log: Arc<AuditLog>,
    /// Wakes the delivery worker when mail was written here.
    mail_ready: Arc<tokio::sync::Notify>,
    /// Requests handled after their answer was sent (mail-sending RPCs): how many may wait, and
    /// how many run at once (a quarter of the pool, so a flood cannot starve other calls).
    background_queue: Arc<tokio::sync::Semaphore>,
    background_workers: Arc<tokio::sync::Semaphore>,
    devices: crate::devices::NewDevicePolicy,
}

/// The services an [`Accounts`] calls on.
pub struct AccountDeps {
    pub pool: Pool,
    pub clock: Clock,
    pub hasher: PasswordHasher,
    pub sessions: Arc<Sessions>,
    pub revoker: Arc<Revoker>,
    pub limits: Arc<Limits>,
    pub audit_log: Arc<AuditLog>,
    pub mail_ready: Arc<tokio::sync::Notify>,
}

impl Accounts {
    pub fn new(deps: AccountDeps, policy: AccountPolicy, pool_size: usize) -> Self {
        let devices = crate::devices::NewDevicePolicy {
            key_encryption_key: policy.key_encryption_key.clone(),
            mail: policy.new_device_mail,
            sessions_url: policy.sessions_url.clone(),
            mail_ready: deps.mail_ready.clone(),
        };
        Self {
            devices,
            pool: deps.pool,
            clock: deps.clock,
            hasher: deps.hasher,
            policy,
            sessions: deps.sessions,
            revoker: deps.revoker,
            limits: deps.limits,
            audit_log: deps.audit_log,
            mail_ready: deps.mail_ready,
            background_queue: Arc::new(tokio::sync::Semaphore::new(1024)),
            background_workers: Arc::new(tokio::sync::Semaphore::new((pool_size / 4).max(2))),
        }
    }
}

impl Accounts {
    /// Runs `work` after the answer, in a task of its own: at most `background_queue` wait and
    /// `background_workers` run at once. Whether it was queued (not when too many wait).
    fn in_background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let Ok(queued) = self.background_queue.clone().try_acquire_owned() else {
            return false;
        };
        let workers = self.background_workers.clone();
        tokio::spawn(async move {
            let _queued = queued;
            let Ok(_working) = workers.acquire_owned().await else {
                return;
            };
            work.await;
        });
        true
    }
}

/// A successful login.
pub struct LoggedIn {
    pub user: UserRow,
    pub tokens: IssuedTokens,
    /// The providers the account has linked, when the sign-in read them already.
    pub linked_providers: Option<Vec<String>>,
}

impl Accounts {
    pub async fn register(&self, email: &str, username: &str, password: &str, client: &ClientInfo) -> Result<UserRow> {
        let email = Email::parse(email)?;
        let username = Username::parse(username)?;
        let password = Password::parse(password, "password")?;
        self.check_password_policy(&password, "password", &[email.as_str(), username.as_str()])
            .await?;
        let user = self
            .create_user(&email, &username, &password, &[Role::User], Some(client))
            .await?;
        self.audit_log
            .record(Event::success("user.registered").user(user.id).client(client))
            .await;
        Ok(user)
    }

    /// The password policy, on a blocking thread: zxcvbn's estimate takes milliseconds that the
    /// async workers must not spend.
    pub(crate) async fn check_password_policy(
        &self,
        password: &Password,
        field: &'static str,
        user_inputs: &[&str],
    ) -> Result<()> {
        let policy = self.policy.password_policy;
        let password = password.clone();
        let inputs: Vec<String> = user_inputs.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            policy.check(&password, field, &inputs)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn create_user(
        &self,
        email: &Email,
        username: &Username,
        password: &Password,
        roles: &[Role],
        registered_by: Option<&ClientInfo>,
    ) -> Result<UserRow> {
        let hash = self.hasher.hash(password).await?;
        let now = self.clock.now();
        let normalized_username = username.normalized();
        let new = NewUser {
            id: Uuid::now_v7(),
            email: email.as_str(),
            email_normalized: email.normalized(),
            username: username.as_str(),
            username_normalized: &normalized_username,
            password_hash: Some(&hash),
            roles: Role::names(roles),
            created_at: now,
            updated_at: now,
        };
        let mut conn = store::conn(&self.pool).await?;
        conn.transaction::<_, StoreError, _>(async |conn| {
            let user = store::users::insert(conn, &new).await?;
            // The device that registered is the account's first: a sign-in from it is no news.
            if let Some(client) = registered_by {
                let device = self.devices.sign_in(user.id, client, true);
                device.remember(conn, user.id, now).await?;
            }
            Ok(user)
        })
        .await
        .map_err(conflict_to_exists)
    }

    /// One answer for an unknown user and a wrong password alike (security rule 8): both verify a
    /// hash of the same cost and return `Unauthenticated`.
    pub async fn login(
        &self,
        identifier: &str,
        password: &str,
        device_name: Option<&str>,
        client: &ClientInfo,
    ) -> Result<LoggedIn> {
        let identifier = identifier.trim();
        if identifier.is_empty() {
            return Err(Error::invalid("identifier", "must not be empty"));
        }
        // No account can have such an identifier: refuse without a look-up.
        if identifier.len() > Email::MAX_LEN || identifier.chars().any(char::is_control) {
            return Err(Error::Unauthenticated);
        }
        let Some(password) = Password::presented(password) else {
            return Err(Error::Unauthenticated);
        };
        let device_name = checked_device_name(device_name)?;
        let (user, linked_providers) = {
            let mut conn = store::conn(&self.pool).await?;
            store::users::find_for_login(&mut conn, &crate::domain::normalize_identifier(identifier))
                .await?
                .unzip()
        };
        let verified = self
            .hasher
            .verify(&password, user.as_ref().and_then(|u| u.password_hash.as_deref()))
            .await?;
        // Every refusal below comes after the same hashing work, with the same answer: unknown
        // user, wrong password, locked or deactivated account look alike (security rule 8).
        // The typed identifier is never recorded (people type passwords into it): a known
        // account is named by its id, an unknown identifier by a keyed digest, which lets an
        // operator see repeated attempts on one name without holding the name.
        let failed = |reason: &'static str| Event::failure("login.failed").client(client).detail("reason", reason);
        // The instant of the attempt, once the password is checked.
        let now = self.clock.now();
        let Some(user) = user else {
            // The same round trips as a wrong password's failure count, so timing tells nothing.
            self.count_failed_login(Uuid::nil(), now).await?;
            let digest = crate::crypto::keyed_digest(
                &self.policy.key_encryption_key,
                "audit identifier",
                crate::domain::normalize_identifier(identifier).as_bytes(),
            );
            self.audit_log
                .record(failed("unknown_user").detail("identifier_digest", digest))
                .await;
            return Err(Error::Unauthenticated);
        };
        if user.locked_until.is_some_and(|until| until > now) {
            // The round trips of a counted failure (a locked account counts no more).
            self.count_failed_login(Uuid::nil(), now).await?;
            self.audit_log.record(failed("locked").user(user.id)).await;
            self.watch_failed_logins(user.id, client, now);
            return Err(Error::Unauthenticated);
        }
        if !verified.ok {
            // An account without a password has none to guess: a lockout there would only let
            // anyone bar its owner's sign-in with a provider. (The same round trips, though.)
            let counted = if user.password_hash.is_some() {
                user.id
            } else {
                Uuid::nil()
            };
            self.count_failed_login(counted, now).await?;
            self.audit_log.record(failed("wrong_password").user(user.id)).await;
            self.watch_failed_logins(user.id, client, now);
            return Err(Error::Unauthenticated);
        }
        if !user.active {
            self.audit_log.record(failed("inactive").user(user.id)).await;
            return Err(Error::Unauthenticated);
        }
        // Told only to someone who knows the password.
        if self.policy.require_verified_email && !user.email_verified {
            self.audit_log.record(failed("email_not_verified").user(user.id)).await;
            return Err(Error::FailedPrecondition("email address not verified"));
        }
        let mut verified_hash = user.password_hash.clone();
        if verified.needs_rehash {
            let hash = self.hasher.hash(&password).await?;
            let mut conn = store::conn(&self.pool).await?;
            // Only over the hash just verified: a reset that landed meanwhile wins.
            if store::users::replace_password_hash(&mut conn, user.id, verified_hash.as_deref(), &hash, now).await? {
                verified_hash = Some(hash);
            } else if let Some(stored) = store::users::find(&mut conn, user.id)
                .await?
                .and_then(|u| u.password_hash)
            {
                // Another login rehashed first: its hash still takes this password.
                drop(conn);
                if self.hasher.verify(&password, Some(&stored)).await?.ok {
                    verified_hash = Some(stored);
                }
            }
        }
        let event = Event::success("login.succeeded").user(user.id).client(client);
        let tokens = self
            .sessions
            .start_session(SignIn {
                user: &user,
                verified_hash: verified_hash.as_deref(),
                device_name,
                client,
                now,
                honour_lockout: true,
                event,
                device: self.devices.sign_in(user.id, client, false),
            })
            .await?;
        self.watch_login_after_lockout(&user, tokens.session_id, client, now)
            .await;
        Ok(LoggedIn {
            user,
            tokens,
            linked_providers: Some(linked_providers.unwrap_or_default()),
        })
    }

    /// Proves again that the caller is the account's owner, before a change that could hand the
    /// account over (a new address, a new password): a stolen access token alone must not do.
    /// A wrong password counts toward the lockout like a failed login; a locked account is
    /// refused whatever is presented. An account without a password (federated only) needs a
    /// session opened in the last five minutes instead.
    pub(crate) async fn confirm_owner(
        &self,
        caller: &Caller,
        user: &UserRow,
        password: Option<&str>,
        field: &'static str,
    ) -> Result<()> {
        let now = self.clock.now();
        if user.locked_until.is_some_and(|until| until > now) {
            return Err(Error::FailedPrecondition(
                "the account is locked after too many wrong passwords; try again later or reset the password",
            ));
        }
        let Some(stored) = user.password_hash.as_deref() else {
            let session = match caller.session_id() {
                Some(id) => {
                    let mut conn = store::conn(&self.pool).await?;
                    store::sessions::find(&mut conn, id).await?
                }
                None => None,
            };
            let fresh = session.is_some_and(|s| now - s.created_at <= RECENT_SIGN_IN);
            return if fresh {
                Ok(())
            } else {
                Err(Error::FailedPrecondition(
                    "sign in again (within the last 5 minutes) to make this change",
                ))
            };
        };
        let presented = password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::invalid(field, "is required for this change"))?;
        let matches = match Password::presented(presented) {
            Some(presented) => self.hasher.verify(&presented, Some(stored)).await?.ok,
            None => false,
        };
        if !matches {
            self.count_failed_login(user.id, now).await?;
            return Err(Error::invalid(field, "is incorrect"));
        }
        Ok(())
    }

    /// Forgets an account's failed password checks in the rate limiter (the per-account login
    /// limit, under both its email and its username, and the password-check limit), so that an
    /// unlocked or reset account can sign in at once.
    pub(crate) async fn forget_failures(&self, user: &UserRow) {
        let now = self.clock.now();
        let limits = &self.limits;
        for identifier in [&user.email, &user.username] {
            let subject = crate::domain::normalize_identifier(identifier);
            limits.reset(crate::ratelimit::LOGIN_PER_ACCOUNT, &subject, now).await;
        }
        limits
            .reset(crate::ratelimit::PASSWORD_CHECK_PER_ACCOUNT, &user.id.to_string(), now)
            .await;
    }

    /// One more consecutive failure; at `AUTHD_LOCKOUT_THRESHOLD` password login locks for
    /// `AUTHD_LOCKOUT_DURATION` (existing sessions are untouched: a lockout is what an attacker
    /// can cause, so it must not cost the owner more than their password login).
    async fn count_failed_login(&self, user_id: Uuid, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let policy = &self.policy;
        let until = now + chrono::Duration::from_std(policy.lockout_duration).map_err(Error::internal)?;
        let mut conn = store::conn(&self.pool).await?;
        let locked = conn
            .transaction::<_, StoreError, _>(async |conn| match store::users::lock(conn, user_id).await? {
                Some(user) => {
                    store::users::record_failed_login(conn, &user, policy.lockout_threshold, until, now).await
                }
                None => Ok(false),
            })
            .await?;
        if locked {
            tracing::warn!(%user_id, "too many failed logins: password login locked");
        }
        Ok(())
    }

    pub async fn get_me(&self, caller: &Caller) -> Result<UserRow> {
        let mut conn = store::conn(&self.pool).await?;
        store::users::find(&mut conn, caller.user_id)
            .await?
            .ok_or(Error::Unauthenticated)
    }

    pub async fn update_me(&self, caller: &Caller, username: Option<&str>) -> Result<UserRow> {
        let mut conn = store::conn(&self.pool).await?;
        match username {
            Some(name) => {
                let name = Username::parse(name)?;
                store::users::set_username(
                    &mut conn,
                    caller.user_id,
                    name.as_str(),
                    &name.normalized(),
                    self.clock.now(),
                )
                .await
                .map_err(conflict_to_exists)
            }
            None => store::users::find(&mut conn, caller.user_id)
                .await?
                .ok_or(Error::Unauthenticated),
        }
    }

    /// Changes the caller's password, ends every other session of theirs and retires every
    /// pending one-time link.
    pub async fn change_password(&self, caller: &Caller, current: &str, new: &str, client: &ClientInfo) -> Result<()> {
        let changed = self.set_own_password(caller, current, new).await;
        let event = if changed.is_ok() {
            Event::success("password.changed")
        } else {
            Event::failure("password.changed")
        };
        self.audit_log.record(event.user(caller.user_id).client(client)).await;
        changed
    }

    async fn set_own_password(&self, caller: &Caller, current: &str, new: &str) -> Result<()> {
        let user = self.get_me(caller).await?;
        self.confirm_owner(caller, &user, Some(current), "current_password")
            .await?;
        let new = Password::parse(new, "new_password")?;
        self.check_password_policy(&new, "new_password", &[&user.email, &user.username])
            .await?;
        let hash = self.hasher.hash(&new).await?;
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        // The new password and the end of the other sessions land together or not at all, and
        // only if nothing (a reset, a lock) changed the account since the password was checked.
        let revocations = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                if lock_standing(conn, caller, Some(user.password_hash.as_deref()), now)
                    .await?
                    .is_none()
                {
                    return Ok(None);
                }
                store::users::set_password_hash(conn, user.id, &hash, now).await?;
                store::one_time_tokens::retire_unused(conn, user.id, now).await?;
                self.revoker
                    .revoke_all_sessions_in(conn, user.id, caller.session_id(), now)
                    .await
                    .map(Some)
            })
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.revoker.apply(&revocations);
        Ok(())
    }

    /// Creates an administrator unless a user with this email exists; returns whether it did.
    /// The password follows the same policy as `Register`, and a placeholder left from the
    /// example secret is refused.
    pub async fn ensure_admin(&self, email: &str, username: Option<&str>, password: &str) -> Result<bool> {
        let email = Email::parse(email)?;
        let password = Password::parse(password, "password")?;
        {
            let mut conn = store::conn(&self.pool).await?;
            if store::users::find_by_email(&mut conn, email.normalized())
                .await?
                .is_some()
            {
                // Checked only for a new account: an existing deployment keeps starting.
                return Ok(false);
            }
        }
        let folded: String = password
            .expose()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        if PLACEHOLDERS.iter().any(|p| folded.contains(p)) {
            return Err(Error::invalid(
                "password",
                "is the example's placeholder; choose a real password",
            ));
        }
        self.check_password_policy(&password, "password", &[email.as_str(), username.unwrap_or_default()])
            .await?;
        let username = match username {
            Some(name) => Username::parse(name)?,
            None => username_from_email(&email),
        };
        match self
            .create_user(&email, &username, &password, &[Role::User, Role::Admin], None)
            .await
        {
            Ok(_) => Ok(true),
            // Another replica created it at the same moment.
            Err(Error::AlreadyExists("email")) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Locks the caller's account row, in the caller's transaction, and returns it if the account
/// still stands as it did when the caller was checked: active, not locked by an administrator
/// (a lockout after failed logins, which anyone can cause, does not stop the owner's session),
/// its password hash still `verified_hash` (when given), and the caller's session not ended. A change racing with
/// a reset, a lock or a revocation then either lands before it (and is undone by it) or finds
/// the credential gone.
pub(crate) async fn lock_standing(
    conn: &mut store::Conn<'_>,
    caller: &Caller,
    verified_hash: Option<Option<&str>>,
    now: chrono::DateTime<chrono::Utc>,
) -> store::StoreResult<Option<UserRow>> {
    let Some(user) = store::users::lock(conn, caller.user_id).await? else {
        return Ok(None);
    };
    let unchanged = verified_hash.is_none_or(|hash| user.password_hash.as_deref() == hash);
    let locked = user.locked_until.is_some_and(|until| until > now) && user.lock_reason.as_deref() != Some(LOCKOUT);
    let usable = user.active && !locked;
    let session_live = match caller.session_id() {
        // The nil session is the operator's (`authd api-keys create`), which has none to end.
        Some(id) if !id.is_nil() => store::sessions::find(conn, id)
            .await?
            .is_some_and(|s| s.revoked_at.is_none() && s.expires_at > now),
        _ => true,
    };
    Ok((unchanged && usable && session_live).then_some(user))
}

/// How recent a sign-in must be to stand in for the password of an account that has none.
const RECENT_SIGN_IN: chrono::Duration = chrono::Duration::minutes(5);

/// Fragments of example secrets (letters and digits only, lower-cased), refused as passwords of
/// the bootstrap administrator.
const PLACEHOLDERS: &[&str] = &["replaceme", "changeme", "changethis"];

/// A username made from an email's local part, for accounts created without one.
fn username_from_email(email: &Email) -> Username {
    let local = email.as_str().split('@').next().unwrap_or_default();
    let mut name: String = local
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(24)
        .collect();
    if name.len() < 3 {
        name = format!("admin{name}");
    }
    Username::parse(&name).unwrap_or_else(|_| Username::parse("admin").expect("valid username"))
}

/// The name a person gave the device a session is opened on: trimmed, none when empty.
fn checked_device_name(name: Option<&str>) -> Result<Option<&str>> {
    let name = name.map(str::trim).filter(|d| !d.is_empty());
    if name.is_some_and(|d| d.chars().count() > 100 || d.chars().any(char::is_control)) {
        return Err(Error::invalid(
            "device_name",
            "must be at most 100 characters, without control characters",
        ));
    }
    Ok(name)
}

fn conflict_to_exists(err: StoreError) -> Error {
    match err {
        StoreError::Conflict(constraint) if constraint.contains("email") => Error::AlreadyExists("email"),
        StoreError::Conflict(constraint) if constraint.contains("username") => Error::AlreadyExists("username"),
        other => other.into(),
    }
}
