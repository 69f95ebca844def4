//! The shared context of every domain service: settings, the pool, the clock, keys, the
//! revocation view and feed, and the password hasher. Domain modules add their rules as
//! `impl App` blocks.

use crate::accounts::PasswordHasher;
use crate::api_keys::ApiKeyCache;
use crate::clock::Clock;
use crate::config::Settings;
use crate::error::Result;
use crate::identity::ClientInfo;
use crate::revocation::{Feed, Revocation, RevocationKind, RevocationView, StoredRevocation};
use crate::store::{self, Pool};
use crate::tokens::{SigningKeys, TokenIssuer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct App {
    pub settings: Settings,
    pub pool: Pool,
    pub clock: Clock,
    pub keys: SigningKeys,
    pub issuer: TokenIssuer,
    /// The rules access tokens are verified under (`authd-client`), for this issuer.
    pub verifier: authd_client::Verifier,
    pub revocations: RevocationView,
    /// Access tokens already verified (see [`crate::tokens::VerifiedTokens`]).
    pub verified_tokens: crate::tokens::VerifiedTokens,
    pub feed: Feed,
    pub hasher: PasswordHasher,
    pub api_keys: ApiKeyCache,
    pub mailer: crate::mail::delivery::Mailer,
    pub rate_limits: crate::ratelimit::RateLimiter,
    /// The audit trail.
    pub audit_log: crate::audit::AuditLog,
    /// Wakes the delivery worker when mail was written here.
    pub(crate) mail_ready: tokio::sync::Notify,
    /// Requests handled after their answer was sent (mail-sending RPCs): how many may wait, and
    /// how many run at once (a quarter of the pool, so a flood cannot starve other calls).
    pub(crate) background_queue: Arc<tokio::sync::Semaphore>,
    pub(crate) background_workers: Arc<tokio::sync::Semaphore>,
    serving: AtomicBool,
    /// Turns true when the server begins to shut down; streams end on it.
    shutdown: watch::Sender<bool>,
    /// Revocations for the Redis feed, sent by the publisher task so no call waits on Redis.
    outbox: mpsc::UnboundedSender<Vec<Revocation>>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Revocation>>>>,
}

impl App {
    /// Connects, loads keys and live revocations. The schema must be current.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Arc<Self>> {
        let token_cache_size = settings.token_cache_size;
        let pool = store::connect(settings.database_url.expose(), settings.database_pool_size).await?;
        store::ping(&pool).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys = SigningKeys::load_or_create(
            &pool,
            &settings.key_encryption_key,
            settings.signing_alg,
            &clock,
            key_publish_window(&settings),
        )
        .await?;
        let hasher = PasswordHasher::new(settings.argon2, settings.password_hash_concurrency)?;
        let issuer = TokenIssuer {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.access_token_ttl,
        };
        let feed = Feed::new(
            settings.redis_url.as_ref().map(|u| u.expose().as_str()),
            &settings.redis_namespace,
        )?;
        let mailer = crate::mail::delivery::Mailer::from_settings(&settings)?;
        let rate_limits = crate::ratelimit::RateLimiter::new(
            settings.rate_limits,
            settings.redis_url.as_ref().map(|u| u.expose().as_str()),
            &settings.redis_namespace,
            settings.key_encryption_key.clone(),
        )?;
        rate_limits.connect(clock.now()).await;
        let pool_size = settings.database_pool_size as usize;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let audit_log = crate::audit::AuditLog::new(pool.clone(), clock.clone());
        let app = Arc::new(Self {
            settings,
            pool,
            clock,
            keys,
            verifier: issuer.verifier(),
            issuer,
            revocations: RevocationView::default(),
            verified_tokens: crate::tokens::VerifiedTokens::new(token_cache_size),
            feed,
            hasher,
            api_keys: ApiKeyCache::default(),
            mailer,
            rate_limits,
            audit_log,
            mail_ready: tokio::sync::Notify::new(),
            background_queue: Arc::new(tokio::sync::Semaphore::new(1024)),
            background_workers: Arc::new(tokio::sync::Semaphore::new((pool_size / 4).max(2))),
            serving: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
        });
        app.load_revocations()
            .await
            .map_err(|e| anyhow::anyhow!("cannot load revocations: {}", e.detail()))?;
        Ok(app)
    }

    /// Rebuilds the revocation view from Postgres (every live revocation).
    pub async fn load_revocations(&self) -> Result<usize> {
        self.absorb_from_store(chrono::DateTime::UNIX_EPOCH).await
    }

    /// Re-reads the revocations of the last two minutes: the safety net under the feed, for a
    /// message lost on the way or a call cancelled between its commit and its broadcast.
    pub async fn catch_up_revocations(&self) -> Result<usize> {
        self.absorb_from_store(self.clock.now() - CATCH_UP_WINDOW).await
    }

    async fn absorb_from_store(&self, after: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        let now = self.clock.now();
        let rows = {
            let mut conn = store::conn(&self.pool).await?;
            store::revocations::recorded_since(&mut conn, after, now).await?
        };
        let fresh = rows
            .iter()
            .filter_map(Revocation::from_row)
            .filter(|revocation| self.absorb(revocation))
            .count();
        self.revocations.prune(now);
        Ok(fresh)
    }

    /// Applies one revocation learnt from elsewhere (the feed or Postgres); returns whether it
    /// was new to this replica.
    pub(crate) fn absorb(&self, revocation: &Revocation) -> bool {
        let fresh = self.revocations.apply(revocation);
        if fresh {
            self.forget_cached_credentials(revocation);
            self.notify_watchers(revocation);
        }
        fresh
    }

    fn notify_watchers(&self, revocation: &Revocation) {
        if revocation.kind != RevocationKind::SecretRotated {
            self.feed.notify_watchers(revocation);
        }
    }

    fn forget_cached_credentials(&self, revocation: &Revocation) {
        match revocation.kind {
            RevocationKind::ApiKey | RevocationKind::SecretRotated => self.api_keys.forget_id(&revocation.subject_id),
            RevocationKind::User => self.api_keys.forget_owner(&revocation.subject_id),
            RevocationKind::Session | RevocationKind::Token => {}
        }
    }

    /// How long after the revocation instant a revoked access token could still be presented.
    pub fn revocation_lifetime(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.access_token_ttl).unwrap_or(chrono::Duration::hours(1))
            + chrono::Duration::seconds(crate::tokens::jwt::LEEWAY_SECS + 60)
    }

    /// Applies revocations made here (already committed to Postgres) to this replica, its
    /// watchers, and, through the feed, every other replica.
    pub fn apply_revocations(&self, revocations: &[Revocation]) {
        for revocation in revocations {
            if self.revocations.apply(revocation) {
                self.notify_watchers(revocation);
            }
            self.forget_cached_credentials(revocation);
        }
        if self.feed.is_distributed() && !revocations.is_empty() {
            let _ = self.outbox.send(revocations.to_vec());
        }
    }

    /// The receiving end of the outbox; the publisher task takes it once.
    pub(crate) fn take_outbox(&self) -> Option<mpsc::UnboundedReceiver<Vec<Revocation>>> {
        self.outbox_rx.lock().expect("outbox lock").take()
    }

    /// Re-reads the signing keys; watchers hear of a change.
    pub async fn reload_keys(&self) -> bool {
        let now = self.clock.now();
        let settings = &self.settings;
        match self
            .keys
            .reload(
                &self.pool,
                &settings.key_encryption_key,
                now,
                key_publish_window(settings),
            )
            .await
        {
            Ok(changed) => {
                if changed {
                    tracing::info!(kid = %self.keys.current().active.kid, "signing keys changed");
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reload signing keys");
                false
            }
        }
    }

    /// Counts a call against a limit; over it, refuses. Refusals reach the audit trail as one
    /// summary per limit and subject each minute (see [`crate::audit::AuditLog::flush_refusals`]).
    pub async fn enforce(&self, limit: crate::ratelimit::Limit, subject: &str, client: &ClientInfo) -> Result<()> {
        self.enforce_for(limit, subject, None, client).await
    }

    /// [`App::enforce`] for a subject that is a known account.
    pub async fn enforce_for(
        &self,
        limit: crate::ratelimit::Limit,
        subject: &str,
        user_id: Option<uuid::Uuid>,
        client: &ClientInfo,
    ) -> Result<()> {
        let now = self.clock.now();
        match self.rate_limits.check(limit, subject, now).await {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                self.audit_log.note_refusal(limit.name, subject, user_id, client);
                Err(crate::error::Error::RateLimited(retry_after))
            }
        }
    }

    /// What health reports for the whole server.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes when the server begins to shut down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// How far back each catch-up re-reads: far longer than any revocation transaction stays open.
const CATCH_UP_WINDOW: chrono::Duration = chrono::Duration::seconds(120);

/// Retired signing keys stay in the JWKS this long: every token they signed has expired by then.
pub fn key_publish_window(settings: &Settings) -> Duration {
    settings.access_token_ttl + Duration::from_secs(120) + settings.key_refresh_interval
}
