//! Sessions and their refresh tokens: one session per login, a refresh token rotated on every use
//! (security rule 5), and revocation that reaches every access token of the session.

use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::crypto::{random_token, token_hash};
use crate::devices::SignInDevice;
use crate::error::{Error, Result};
use crate::identity::Caller;
use crate::identity::ClientInfo;
use crate::revocation::Revoker;
use crate::secret::Secret;
use crate::store::sessions::{NewRefreshToken, SessionRow};
use crate::store::users::UserRow;
use crate::store::{self, Pool};
use crate::tokens::jwt::{CLIENT_ID, TokenRequest};
use crate::tokens::{SigningKeys, TokenIssuer};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use std::sync::Arc;
use uuid::Uuid;

/// The scope carried by access tokens issued to users.
pub const USER_TOKEN_SCOPE: &str = "profile";

/// The token pair handed to a user.
pub struct IssuedTokens {
    pub access_token: Secret<String>,
    pub refresh_token: Secret<String>,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub session_id: Uuid,
}

/// A sign-in about to open a session.
pub(crate) struct SignIn<'a> {
    pub user: &'a UserRow,
    /// The hash the password was checked against (for a provider sign-in, the account's hash
    /// as read): the session opens only if the account still holds it (no reset meanwhile).
    pub verified_hash: Option<&'a str>,
    pub device_name: Option<&'a str>,
    pub client: &'a ClientInfo,
    /// The login's instant.
    pub now: DateTime<Utc>,
    /// Whether a lockout after failed passwords bars it (false for a sign-in that used none).
    pub honour_lockout: bool,
    /// The `login.succeeded` event, written with the session (its id added).
    pub event: Event,
    /// The device signed in from, noted with the session.
    pub device: SignInDevice<'a>,
}

/// How many sessions a user may hold, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// `AUTHD_REFRESH_TOKEN_TTL`: a session lasts as long as its refresh tokens.
    pub refresh_token_ttl: std::time::Duration,
    /// `AUTHD_SINGLE_SESSION`: a login ends every other session of the user.
    pub single_session: bool,
    /// `AUTHD_MAX_SESSIONS_PER_USER` (0: no limit): a login beyond it ends the oldest.
    pub max_sessions_per_user: u32,
}

/// Sessions: opened by a login, rotated by refresh, ended by logout or revocation.
pub struct Sessions {
    pool: Pool,
    clock: Clock,
    keys: SigningKeys,
    issuer: TokenIssuer,
    revoker: Arc<Revoker>,
    audit_log: Arc<AuditLog>,
    policy: SessionPolicy,
}

impl Sessions {
    pub fn new(
        pool: Pool,
        clock: Clock,
        keys: SigningKeys,
        issuer: TokenIssuer,
        revoker: Arc<Revoker>,
        audit_log: Arc<AuditLog>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            pool,
            clock,
            keys,
            issuer,
            revoker,
            audit_log,
            policy,
        }
    }

    /// Opens a session for a user who just proved who they are, enforcing the session limits.
    pub(crate) async fn start_session(&self, sign_in: SignIn<'_>) -> Result<IssuedTokens> {
        let SignIn {
            user,
            verified_hash,
            device_name,
            client,
            now,
            honour_lockout,
            event,
            device,
        } = sign_in;
        let session = SessionRow {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now + chrono::Duration::from_std(self.policy.refresh_token_ttl).map_err(Error::internal)?,
            revoked_at: None,
            ip_address: client.ip_address.clone(),
            user_agent: client.user_agent.as_deref().map(|ua| ua.chars().take(512).collect()),
            device_name: device_name.map(str::to_string),
        };
        let refresh_token = random_token();
        let hash = token_hash(&refresh_token);
        // The sign-in's audit event is written with its session: a session is never opened
        // without one.
        let event = self.audit_log.row(event.detail("session_id", session.id.to_string()));
        let mut conn = store::conn(&self.pool).await?;
        let session_for_tx = session.clone();
        let (revocations, mailed) = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                // Serialised with other logins and revocations of this user (the statement takes
                // the account's row lock); and a user locked out, deactivated or given a new
                // password (a reset) since the password check gets no session.
                if !store::users::record_login(conn, user.id, verified_hash, honour_lockout, now).await? {
                    return Ok(None);
                }
                // The lock held, the rest goes in two groups of statements sent at once (see
                // `store::Shared`): none in a group depends on another of its group.
                let (_, _, ended, unknown_device) = tokio::try_join!(
                    store::sessions::insert(conn, &session_for_tx),
                    store::audit::insert(conn, &event),
                    self.sessions_over_limit(conn, user.id, session_for_tx.id, now),
                    device.remember(conn, user.id, now),
                )?;
                // After its session, which it refers to.
                let token = NewRefreshToken {
                    token_hash: &hash,
                    session_id: session_for_tx.id,
                    created_at: now,
                    expires_at: session_for_tx.expires_at,
                };
                let ((), revocations) = tokio::try_join!(
                    store::sessions::insert_refresh_token(conn, &token),
                    self.revoker.record_sessions_ended(conn, &ended, user.id, now),
                )?;
                let mut mailed = false;
                if unknown_device && let Some(new) = device.consider(conn, user, session_for_tx.id, client, now).await?
                {
                    store::audit::insert(conn, &self.audit_log.row(new.event)).await?;
                    mailed = new.mailed;
                }
                Ok(Some((revocations, mailed)))
            })
            .await?
            .ok_or(Error::Unauthenticated)?;
        device.committed(mailed);
        self.revoker.apply(&revocations);
        self.issue_tokens(user, &session, refresh_token, now)
    }

    /// The live sessions a new login pushes out: all others in single-session mode, else the
    /// oldest beyond `AUTHD_MAX_SESSIONS_PER_USER`.
    async fn sessions_over_limit(
        &self,
        conn: store::Shared<'_>,
        user_id: Uuid,
        new_session: Uuid,
        now: DateTime<Utc>,
    ) -> store::StoreResult<Vec<Uuid>> {
        if self.policy.single_session {
            return store::sessions::revoke_all_for_user(conn, user_id, Some(new_session), now).await;
        }
        match self.policy.max_sessions_per_user {
            0 => Ok(Vec::new()),
            max => store::sessions::revoke_beyond(conn, user_id, new_session, max, now).await,
        }
    }

    fn issue_tokens(
        &self,
        user: &UserRow,
        session: &SessionRow,
        refresh_token: String,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens> {
        let ring = self.keys.current();
        let (access_token, claims) = self
            .issuer
            .issue(
                &ring,
                &TokenRequest {
                    user_id: user.id,
                    username: &user.username,
                    session_id: session.id,
                    roles: &user.roles,
                    scope: USER_TOKEN_SCOPE,
                },
                now,
            )
            .map_err(Error::internal)?;
        debug_assert_eq!(claims.client_id, CLIENT_ID);
        Ok(IssuedTokens {
            access_token: access_token.into(),
            refresh_token: refresh_token.into(),
            expires_in: claims.exp - claims.iat,
            // In whole seconds, rounded up.
            refresh_expires_in: ((session.expires_at - now).num_milliseconds().max(0) + 999) / 1000,
            session_id: session.id,
        })
    }

    /// Exchanges a refresh token for a new pair. Exactly one of concurrent uses wins; a token used
    /// before is a replay, and ends its whole session.
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<IssuedTokens> {
        let presented = refresh_token.trim();
        if presented.is_empty() || presented.len() > 256 {
            return Err(Error::Unauthenticated);
        }
        let hash = token_hash(presented);
        let now = self.clock.now();
        let next_token = random_token();
        let next_hash = token_hash(&next_token);
        let mut conn = store::conn(&self.pool).await?;
        enum Outcome {
            Rotated(Box<(SessionRow, UserRow)>),
            Replayed(Uuid, Uuid),
            Refused,
        }
        let outcome = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                let Some(session_id) = store::sessions::consume_refresh_token(conn, &hash, now).await? else {
                    return Ok(match store::sessions::session_of_refresh_token(conn, &hash).await? {
                        Some(session_id) => match store::sessions::find(conn, session_id).await? {
                            Some(session) => Outcome::Replayed(session.id, session.user_id),
                            None => Outcome::Refused,
                        },
                        None => Outcome::Refused,
                    });
                };
                let Some(session) = store::sessions::find(conn, session_id).await? else {
                    return Ok(Outcome::Refused);
                };
                let user = store::users::find(conn, session.user_id).await?;
                let Some(user) = user.filter(|u| u.active && session.revoked_at.is_none() && session.expires_at > now)
                else {
                    return Ok(Outcome::Refused);
                };
                store::sessions::insert_refresh_token(
                    conn,
                    &NewRefreshToken {
                        token_hash: &next_hash,
                        session_id,
                        created_at: now,
                        expires_at: session.expires_at,
                    },
                )
                .await?;
                store::sessions::touch(conn, session_id, now).await?;
                Ok(Outcome::Rotated(Box::new((session, user))))
            })
            .await?;
        drop(conn);
        match outcome {
            Outcome::Rotated(found) => {
                let (session, user) = *found;
                let event = Event::success("token.refreshed").user(user.id).client(client);
                self.audit_log
                    .record(event.detail("session_id", session.id.to_string()))
                    .await;
                self.issue_tokens(&user, &session, next_token, now)
            }
            Outcome::Replayed(session_id, user_id) => {
                tracing::warn!(%session_id, %user_id, "refresh token replayed; ending the session");
                self.revoker.end_sessions(&[session_id], user_id).await?;
                let event = Event::failure("refresh_token.reused").user(user_id).client(client);
                self.audit_log
                    .record(event.detail("session_id", session_id.to_string()))
                    .await;
                Err(Error::Unauthenticated)
            }
            Outcome::Refused => Err(Error::Unauthenticated),
        }
    }

    /// Ends the session of a refresh token, or the caller's own session.
    pub async fn logout(
        &self,
        refresh_token: Option<&str>,
        caller: Option<&Caller>,
        client: &ClientInfo,
    ) -> Result<()> {
        if let Some(user_id) = self.end_own_session(refresh_token, caller).await? {
            self.audit_log
                .record(Event::success("logout").user(user_id).client(client))
                .await;
        }
        Ok(())
    }

    /// Returns the user whose session ended, if any did.
    async fn end_own_session(&self, refresh_token: Option<&str>, caller: Option<&Caller>) -> Result<Option<Uuid>> {
        if let Some(token) = refresh_token.map(str::trim).filter(|t| !t.is_empty()) {
            let hash = token_hash(token);
            let mut conn = store::conn(&self.pool).await?;
            let session = match store::sessions::session_of_refresh_token(&mut conn, &hash).await? {
                Some(id) => store::sessions::find(&mut conn, id).await?,
                None => None,
            };
            drop(conn);
            // An unknown token gets the same answer: logging out is idempotent.
            if let Some(session) = &session {
                self.revoker.end_sessions(&[session.id], session.user_id).await?;
            }
            return Ok(session.map(|s| s.user_id));
        }
        let caller = caller.ok_or(Error::Unauthenticated)?;
        let session_id = caller.session_id().ok_or(Error::FailedPrecondition(
            "logout needs a refresh token or an access token; API keys have no session",
        ))?;
        self.revoker.end_sessions(&[session_id], caller.user_id).await?;
        Ok(Some(caller.user_id))
    }

    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<SessionRow>> {
        let mut conn = store::conn(&self.pool).await?;
        Ok(store::sessions::live_for_user(&mut conn, caller.user_id, self.clock.now()).await?)
    }

    /// Ends every session of the caller, or every other one.
    pub async fn revoke_all(&self, caller: &Caller, keep_current: bool, client: &ClientInfo) -> Result<usize> {
        let keep = if keep_current { caller.session_id() } else { None };
        let revoked = self.revoker.revoke_all_sessions(caller.user_id, keep).await?;
        let event = Event::success("session.revoked").user(caller.user_id).client(client);
        self.audit_log
            .record(event.detail("all", true).detail("count", revoked))
            .await;
        Ok(revoked)
    }

    /// Ends one of the caller's sessions; another user's session is `NotFound`, never revealed.
    pub async fn revoke_session(&self, caller: &Caller, session_id: &str, client: &ClientInfo) -> Result<()> {
        let id = crate::domain::SessionId::parse(session_id)?.uuid();
        let session = {
            let mut conn = store::conn(&self.pool).await?;
            store::sessions::find(&mut conn, id).await?
        };
        match session {
            Some(session) if session.user_id == caller.user_id => {
                self.revoker.end_sessions(&[id], caller.user_id).await?;
                let event = Event::success("session.revoked").user(caller.user_id).client(client);
                self.audit_log
                    .record(event.detail("session_id", session_id.to_string()))
                    .await;
                Ok(())
            }
            _ => Err(Error::NotFound("session")),
        }
    }
}
