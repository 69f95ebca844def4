//! Scoped API keys: created with a secret shown once, stored as a SHA-256 hash, validated from an
//! in-process cache so that a valid key costs no database query.

/// The API-key format, from the verification core.
pub use authd_client::api_key as format;

use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::crypto::{constant_time_eq, token_hash};
use crate::domain::Scopes;
use crate::error::{Error, Result};
use crate::identity::{Caller, ClientInfo};
use crate::revocation::{ForgetsRevoked, Revoker};
use crate::revocation::{Revocation, RevocationKind, StoredRevocation};
use crate::store::Pool;
use crate::store::{self, api_keys::ApiKeyRow};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use uuid::Uuid;

/// A key that validated: what introspection and the caller identity need.
#[derive(Clone, Debug)]
pub struct ActiveApiKey {
    pub id: Uuid,
    pub prefix: String,
    pub user_id: Uuid,
    pub username: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A cached row plus its owner's name and standing.
#[derive(Debug)]
struct CachedKey {
    row: ApiKeyRow,
    username: String,
    owner_active: bool,
    /// Whether the owner is an administrator, who may grant any scope.
    owner_admin: bool,
    /// The second (Unix time) of the last use noted for `last_used_at`: a key used many times a
    /// second is noted once a second, not on every call.
    last_noted: AtomicI64,
}

/// How long a cached key (or a cached "no such key") is trusted before it is read again. Changes
/// made on this replica invalidate at once; the lifetime bounds what another replica's change,
/// or a change to the owner, can leave stale.
const CACHE_TTL: chrono::Duration = chrono::Duration::seconds(60);
/// Unknown prefixes remembered at most; beyond it they are forgotten, never the known keys.
const MAX_MISSES: usize = 50_000;

/// A cached key and when it was read.
type Loaded = (Arc<CachedKey>, DateTime<Utc>);

/// Keys by prefix, prefixes known to have no key, and `last_used_at` stamps not yet written.
#[derive(Default)]
pub struct ApiKeyCache {
    keys: RwLock<HashMap<String, Loaded>>,
    misses: RwLock<HashMap<String, DateTime<Utc>>>,
    /// Bumped by every invalidation, so a look-up that raced with one does not store stale data.
    generation: AtomicU64,
    usage: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl ForgetsRevoked for ApiKeyCache {
    fn forget(&self, revocation: &Revocation) {
        match revocation.kind {
            RevocationKind::ApiKey | RevocationKind::SecretRotated => self.forget_id(&revocation.subject_id),
            RevocationKind::User => self.forget_owner(&revocation.subject_id),
            RevocationKind::Session | RevocationKind::Token => {}
        }
    }
}

enum Cached {
    /// A key, and when it was read.
    Key(Arc<CachedKey>, DateTime<Utc>),
    NoKey,
    Unknown,
}

impl ApiKeyCache {
    /// Drops a key (by id) so the next use reads it afresh.
    pub fn forget_id(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut keys = self.keys.write().expect("api key cache lock");
        keys.retain(|_, (key, _)| key.row.id.to_string() != id);
    }

    /// Drops every key of one owner (their state changed).
    pub fn forget_owner(&self, owner: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut keys = self.keys.write().expect("api key cache lock");
        keys.retain(|_, (key, _)| key.row.user_id.to_string() != owner);
    }

    fn forget_prefix(&self, prefix: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.keys.write().expect("api key cache lock").remove(prefix);
        self.misses.write().expect("api key cache lock").remove(prefix);
    }

    fn get(&self, prefix: &str, now: DateTime<Utc>) -> Cached {
        if let Some((key, at)) = self.keys.read().expect("api key cache lock").get(prefix)
            && now - *at < CACHE_TTL
        {
            return Cached::Key(key.clone(), *at);
        }
        match self.misses.read().expect("api key cache lock").get(prefix) {
            Some(at) if now - *at < CACHE_TTL => Cached::NoKey,
            _ => Cached::Unknown,
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores what a look-up found, unless an invalidation happened since it began.
    fn put(&self, prefix: &str, entry: Option<Arc<CachedKey>>, generation: u64, now: DateTime<Utc>) {
        match entry {
            Some(key) => {
                let mut keys = self.keys.write().expect("api key cache lock");
                if self.generation() == generation {
                    keys.insert(prefix.to_string(), (key, now));
                }
            }
            None => {
                let mut misses = self.misses.write().expect("api key cache lock");
                if misses.len() >= MAX_MISSES {
                    misses.clear();
                }
                if self.generation() == generation {
                    misses.insert(prefix.to_string(), now);
                }
            }
        }
    }

    fn note_use(&self, id: Uuid, at: DateTime<Utc>) {
        self.usage.lock().expect("api key usage lock").insert(id, at);
    }

    fn take_usage(&self) -> Vec<(Uuid, DateTime<Utc>)> {
        std::mem::take(&mut *self.usage.lock().expect("api key usage lock"))
            .into_iter()
            .collect()
    }
}

/// A new key, with the secret that is shown this once.
pub struct IssuedApiKey {
    pub key: ApiKeyRow,
    pub secret: crate::secret::Secret<String>,
}

/// API keys: their validation (from the cache), creation, rotation and revocation.
pub struct ApiKeys {
    pool: Pool,
    clock: Clock,
    cache: Arc<ApiKeyCache>,
    revoker: Arc<Revoker>,
    audit_log: Arc<AuditLog>,
    /// `AUTHD_USER_GRANTABLE_SCOPES`.
    grantable: Vec<String>,
}

impl ApiKeys {
    pub fn new(
        pool: Pool,
        clock: Clock,
        cache: Arc<ApiKeyCache>,
        revoker: Arc<Revoker>,
        audit_log: Arc<AuditLog>,
        grantable: Vec<String>,
    ) -> Self {
        Self {
            pool,
            clock,
            cache,
            revoker,
            audit_log,
            grantable,
        }
    }

    /// Validates a presented API key: shape and checksum, then hash (constant time), expiry,
    /// revocation, and its owner's state.
    pub async fn validate_api_key(&self, presented: &str) -> Result<Option<ActiveApiKey>> {
        let Some(prefix) = format::parse(presented) else {
            return Ok(None);
        };
        let now = self.clock.now();
        // A replica that cannot prove its view current reads the key (and its revocations) afresh.
        let synced = self.revoker.feed().is_synced();
        let cached = if synced {
            self.cache.get(prefix, now)
        } else {
            Cached::Unknown
        };
        let hash = token_hash(presented);
        let mut key = match cached {
            Cached::Key(key, loaded_at) => {
                // A secret that matches neither hash may be newer than the copy (a rotation whose
                // news has not arrived): read the row once more, at most once a second per key.
                if !secret_matches(&key, &hash, now) && now - loaded_at > chrono::Duration::seconds(1) {
                    self.cache.forget_prefix(prefix);
                    Box::pin(self.load_and_cache(prefix, now)).await?
                } else {
                    Some(key)
                }
            }
            Cached::NoKey => None,
            Cached::Unknown => Box::pin(self.load_and_cache(prefix, now)).await?,
        };
        let Some(key) = key.take() else {
            return Ok(None);
        };
        let live = key.row.revoked_at.is_none()
            && key.row.expires_at.is_none_or(|exp| exp > now)
            && key.owner_active
            && !self
                .revoker
                .view()
                .is_api_key_revoked(key.row.id, key.row.user_id, key.row.created_at);
        if !secret_matches(&key, &hash, now) || !live {
            return Ok(None);
        }
        if !synced && Box::pin(self.api_key_revoked_in_store(&key, now)).await? {
            return Ok(None);
        }
        let second = now.timestamp();
        if key.last_noted.swap(second, Ordering::Relaxed) != second {
            self.cache.note_use(key.row.id, now);
        }
        Ok(Some(ActiveApiKey {
            id: key.row.id,
            prefix: key.row.prefix.clone(),
            user_id: key.row.user_id,
            username: key.username.clone(),
            scopes: self.effective_scopes(&key),
            created_at: key.row.created_at,
            expires_at: key.row.expires_at,
        }))
    }

    /// The scopes a key holds now: those its owner may still grant. A key minted under an older,
    /// wider rule, or before `AUTHD_USER_GRANTABLE_SCOPES` was narrowed, loses the rest.
    fn effective_scopes(&self, key: &CachedKey) -> Vec<String> {
        if key.owner_admin {
            return key.row.scopes.clone();
        }
        let allowed = &self.grantable;
        key.row
            .scopes
            .iter()
            .filter(|scope| allowed.contains(scope))
            .cloned()
            .collect()
    }

    /// The check of a replica that cannot prove its view current: Postgres, the record.
    async fn api_key_revoked_in_store(&self, key: &CachedKey, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = store::conn(&self.pool).await?;
        let (id, owner) = (key.row.id.to_string(), key.row.user_id.to_string());
        Ok(store::revocations::api_key_revoked(&mut conn, &id, &owner, key.row.created_at, now).await?)
    }

    async fn load_and_cache(&self, prefix: &str, now: DateTime<Utc>) -> Result<Option<Arc<CachedKey>>> {
        let generation = self.cache.generation();
        let entry = self.load_api_key(prefix).await?;
        self.cache.put(prefix, entry.clone(), generation, now);
        Ok(entry)
    }

    async fn load_api_key(&self, prefix: &str) -> Result<Option<Arc<CachedKey>>> {
        let mut conn = store::conn(&self.pool).await?;
        let Some(row) = store::api_keys::find_by_prefix(&mut conn, prefix).await? else {
            return Ok(None);
        };
        let Some(owner) = store::users::find(&mut conn, row.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(CachedKey {
            row,
            username: owner.username,
            owner_active: owner.active,
            owner_admin: owner.roles.iter().any(|r| r == crate::domain::Role::Admin.as_str()),
            last_noted: AtomicI64::new(0),
        })))
    }

    pub async fn create_api_key(
        &self,
        caller: &Caller,
        label: &str,
        scopes: &[String],
        expires_at: Option<DateTime<Utc>>,
        client: &ClientInfo,
    ) -> Result<IssuedApiKey> {
        let issued = self.create(caller, label, scopes, expires_at).await?;
        let event = Event::success("api_key.created").user(caller.user_id).client(client);
        self.audit_log
            .record(
                event
                    .detail("api_key_id", issued.key.id.to_string())
                    .detail("scopes", issued.key.scopes.clone()),
            )
            .await;
        Ok(issued)
    }

    async fn create(
        &self,
        caller: &Caller,
        label: &str,
        scopes: &[String],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedApiKey> {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
            return Err(Error::invalid(
                "label",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        let scopes = Scopes::parse(scopes.iter().map(String::as_str))?;
        self.check_grantable(caller, &scopes)?;
        let now = self.clock.now();
        if expires_at.is_some_and(|exp| exp <= now) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let prefix = format::new_prefix();
        let secret = format::new_key(&prefix);
        let mut conn = store::conn(&self.pool).await?;
        // Under the owner's row lock, with the caller's session still live: a key made while
        // the account is reset, locked or revoked either lands before (and is revoked with the
        // rest) or is not made at all. The key's own instant is read once the lock is held, so
        // no revocation that committed while this call waited for it can predate the key (the
        // operator's path has no session that such a revocation would end).
        let row = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                if crate::accounts::lock_standing(conn, caller, None, now).await?.is_none() {
                    return Ok(None);
                }
                let now = self.clock.now();
                let row = ApiKeyRow {
                    id: Uuid::now_v7(),
                    user_id: caller.user_id,
                    label: label.to_string(),
                    prefix,
                    secret_hash: token_hash(&secret),
                    previous_secret_hash: None,
                    previous_expires_at: None,
                    scopes: scopes.to_strings(),
                    created_at: now,
                    expires_at,
                    last_used_at: None,
                    revoked_at: None,
                };
                store::api_keys::insert(conn, &row).await?;
                Ok(Some(row))
            })
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.cache.forget_prefix(&row.prefix);
        Ok(IssuedApiKey {
            key: row,
            secret: secret.into(),
        })
    }

    /// Creates a key for the user with this email, as an operator (`authd api-keys create`):
    /// the scopes that user could grant themselves.
    pub async fn create_api_key_for(&self, owner_email: &str, label: &str, scopes: &[String]) -> Result<IssuedApiKey> {
        let email = crate::domain::Email::parse(owner_email)?;
        let owner = {
            let mut conn = store::conn(&self.pool).await?;
            store::users::find_by_email(&mut conn, email.normalized()).await?
        }
        .ok_or(Error::NotFound("user"))?;
        let caller = Caller {
            user_id: owner.id,
            username: owner.username,
            roles: crate::domain::Role::known(&owner.roles),
            scopes: Vec::new(),
            credential: crate::identity::Credential::AccessToken {
                session_id: Uuid::nil(),
                jti: String::new(),
            },
        };
        self.create(&caller, label, scopes, None).await
    }

    /// Admins (in their own session) may put any scope on a key. Others may grant only the
    /// scopes listed in `AUTHD_USER_GRANTABLE_SCOPES` (deny by default: gateways believe a key's
    /// scopes, so a self-registered user must not mint `billing:admin`).
    fn check_grantable(&self, caller: &Caller, scopes: &Scopes) -> Result<()> {
        caller.require_user_session()?;
        if caller.is_admin() {
            return Ok(());
        }
        let allowed = &self.grantable;
        match scopes.iter().find(|scope| !allowed.iter().any(|a| a == scope.as_str())) {
            Some(scope) => Err(Error::denied(format!(
                "scope `{}` is not grantable by this caller (see AUTHD_USER_GRANTABLE_SCOPES)",
                scope.as_str()
            ))),
            None => Ok(()),
        }
    }

    pub async fn list_api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyRow>> {
        let mut conn = store::conn(&self.pool).await?;
        let mut rows = store::api_keys::list_for_user(&mut conn, caller.user_id).await?;
        let usage = self.cache.usage.lock().expect("api key usage lock").clone();
        for row in &mut rows {
            if let Some(at) = usage.get(&row.id) {
                row.last_used_at = row.last_used_at.max(Some(*at));
            }
        }
        Ok(rows)
    }

    pub async fn revoke_api_key(&self, caller: &Caller, id: &str, client: &ClientInfo) -> Result<()> {
        let key_id = crate::domain::ApiKeyId::parse(id)?;
        self.revoker.revoke_api_key(caller.user_id, key_id.uuid()).await?;
        let event = Event::success("api_key.revoked").user(caller.user_id).client(client);
        self.audit_log.record(event.detail("api_key_id", id.to_string())).await;
        Ok(())
    }

    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        id: &str,
        grace: std::time::Duration,
        client: &ClientInfo,
    ) -> Result<IssuedApiKey> {
        let id = crate::domain::ApiKeyId::parse(id)?.uuid();
        if grace > std::time::Duration::from_secs(30 * 86_400) {
            return Err(Error::invalid("grace_period", "must be at most 30 days"));
        }
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let Some(existing) = store::api_keys::find_for_user(&mut conn, id, caller.user_id).await? else {
            return Err(Error::NotFound("api key"));
        };
        let secret = format::new_key(&existing.prefix);
        let previous_until = now + chrono::Duration::from_std(grace).map_err(Error::internal)?;
        let new_hash = token_hash(&secret);
        // Recorded like a revocation, so every replica drops its cached copy of the key.
        let rotated = Revocation {
            kind: RevocationKind::SecretRotated,
            subject_id: id.to_string(),
            user_id: Some(caller.user_id),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(5),
        };
        let row = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                let row = store::api_keys::rotate(conn, id, caller.user_id, &new_hash, previous_until, now).await?;
                if row.is_some() {
                    store::revocations::insert_many(conn, &[rotated.to_row()]).await?;
                }
                Ok(row)
            })
            .await?
            .ok_or(Error::FailedPrecondition("the api key is revoked or expired"))?;
        self.cache.forget_prefix(&row.prefix);
        self.revoker.apply(&[rotated]);
        let event = Event::success("api_key.rotated").user(caller.user_id).client(client);
        self.audit_log
            .record(event.detail("api_key_id", row.id.to_string()))
            .await;
        Ok(IssuedApiKey {
            key: row,
            secret: secret.into(),
        })
    }

    /// Writes the `last_used_at` stamps gathered since the last flush.
    pub async fn flush_api_key_usage(&self) -> Result<()> {
        let usage = self.cache.take_usage();
        if usage.is_empty() {
            return Ok(());
        }
        let mut conn = store::conn(&self.pool).await?;
        store::api_keys::record_usage(&mut conn, &usage).await?;
        Ok(())
    }
}

/// Whether `hash` is the key's current secret, or its previous one within the grace period.
fn secret_matches(key: &CachedKey, hash: &[u8], now: DateTime<Utc>) -> bool {
    let current = constant_time_eq(hash, &key.row.secret_hash);
    let previous = key
        .row
        .previous_secret_hash
        .as_deref()
        .is_some_and(|old| constant_time_eq(hash, old))
        && key.row.previous_expires_at.is_some_and(|until| until > now);
    current || previous
}
