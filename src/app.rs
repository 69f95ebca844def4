//! The composition root: builds, in dependency order, the services of the domain (each holding
//! only what it uses) and the state the server shares (health, shutdown). It holds no rules of
//! its own.

use crate::accounts::{AccountDeps, AccountPolicy, Accounts, PasswordHasher};
use crate::api_keys::{ApiKeyCache, ApiKeys};
use crate::audit::AuditLog;
use crate::authn::Authenticator;
use crate::clock::Clock;
use crate::config::Settings;
use crate::health::ServerState;
use crate::ratelimit::{Limits, RateLimiter};
use crate::revocation::{Feed, Revoker};
use crate::sessions::{SessionPolicy, Sessions};
use crate::store::{self, Pool};
use crate::telemetry::Metrics;
use crate::tokens::{SigningKeys, TokenIssuer, VerifiedTokens};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::Duration;

pub struct App {
    pub settings: Settings,
    pub pool: Pool,
    pub clock: Clock,
    pub keys: SigningKeys,
    pub hasher: PasswordHasher,
    pub mailer: crate::mail::delivery::Mailer,
    /// The audit trail.
    pub audit_log: Arc<AuditLog>,
    pub limits: Arc<Limits>,
    /// Revocations: the view, the feed, and the one writer of revocation records.
    pub revoker: Arc<Revoker>,
    pub api_keys: Arc<ApiKeys>,
    /// Who is calling: the verification core, the verified-token cache, the API-key cache.
    pub authenticator: Arc<Authenticator>,
    pub sessions: Arc<Sessions>,
    pub accounts: Arc<Accounts>,
    /// The OpenID providers of federated sign-in.
    pub providers: Arc<crate::providers::Providers>,
    /// Wakes the delivery worker when mail was written here.
    pub(crate) mail_ready: Arc<tokio::sync::Notify>,
    /// Health and shutdown, shared with the jobs and the streams.
    pub state: Arc<ServerState>,
    /// The instruments, scraped at `/metrics` and pushed to a collector.
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Connects, loads keys and live revocations. The schema must be current.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Arc<Self>> {
        let pool = store::connect(settings.database.url.expose(), settings.database.pool_size).await?;
        store::ping(&pool).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys = SigningKeys::load_or_create(
            &pool,
            &settings.tokens.key_encryption_key,
            settings.tokens.signing_alg,
            &clock,
            key_publish_window(&settings),
        )
        .await?;
        let metrics = Metrics::new(settings.telemetry.metrics, crate::grpc::observe::methods())?;
        let hasher = PasswordHasher::new(settings.argon2, settings.passwords.hash_concurrency)?
            .with_metrics(metrics.hashing.clone());
        let issuer = TokenIssuer {
            issuer: settings.tokens.issuer.clone(),
            audience: settings.tokens.audience.clone(),
            ttl: settings.tokens.access_token_ttl,
        };
        let redis_url = settings.redis.url.as_ref().map(|u| u.expose().as_str());
        let feed = Feed::new(redis_url, &settings.redis.namespace)?;
        let mailer = crate::mail::delivery::Mailer::from_settings(&settings)?;
        let audit_log = Arc::new(AuditLog::new(
            pool.clone(),
            clock.clone(),
            metrics.suspicious_events.clone(),
        ));
        let limiter = RateLimiter::new(
            settings.limits.enabled,
            redis_url,
            &settings.redis.namespace,
            settings.tokens.key_encryption_key.clone(),
        )?;
        let limits = Arc::new(Limits::new(
            limiter,
            audit_log.clone(),
            clock.clone(),
            metrics.rate_limit_refusals.clone(),
        ));
        limits.connect().await;
        let key_cache = Arc::new(ApiKeyCache::default());
        let revoker = Arc::new(Revoker::new(
            pool.clone(),
            clock.clone(),
            feed,
            vec![key_cache.clone()],
            settings.tokens.access_token_ttl,
        ));
        let api_keys = Arc::new(ApiKeys::new(
            pool.clone(),
            clock.clone(),
            key_cache,
            revoker.clone(),
            audit_log.clone(),
            settings.accounts.user_grantable_scopes.clone(),
        ));
        let authenticator = Arc::new(Authenticator::new(
            pool.clone(),
            clock.clone(),
            keys.clone(),
            issuer.verifier(),
            VerifiedTokens::new(settings.tokens.cache_size),
            revoker.clone(),
            api_keys.clone(),
        ));
        let sessions = Arc::new(Sessions::new(
            pool.clone(),
            clock.clone(),
            keys.clone(),
            issuer,
            revoker.clone(),
            audit_log.clone(),
            SessionPolicy {
                refresh_token_ttl: settings.tokens.refresh_token_ttl,
                single_session: settings.accounts.single_session,
                max_sessions_per_user: settings.accounts.max_sessions_per_user,
            },
        ));
        let mail_ready = Arc::new(tokio::sync::Notify::new());
        let accounts = Arc::new(Accounts::new(
            AccountDeps {
                pool: pool.clone(),
                clock: clock.clone(),
                hasher: hasher.clone(),
                sessions: sessions.clone(),
                revoker: revoker.clone(),
                limits: limits.clone(),
                audit_log: audit_log.clone(),
                mail_ready: mail_ready.clone(),
            },
            AccountPolicy::from_settings(&settings),
            settings.database.pool_size as usize,
        ));
        let providers = Arc::new(crate::providers::Providers::new(&settings.providers)?);
        revoker
            .load()
            .await
            .map_err(|e| anyhow::anyhow!("cannot load revocations: {}", e.detail()))?;
        let app = Arc::new(Self {
            settings,
            pool,
            clock,
            keys,
            hasher,
            mailer,
            audit_log,
            limits,
            revoker,
            api_keys,
            authenticator,
            sessions,
            accounts,
            providers,
            mail_ready,
            state: Arc::default(),
            metrics,
        });
        app.observe();
        Ok(app)
    }

    /// The gauges and counts read from the server's state when metrics are collected. They
    /// hold the server weakly: a stopped server is not kept alive by its metrics.
    fn observe(self: &Arc<Self>) {
        let metrics = &self.metrics;
        let read = |f: fn(&App) -> u64| {
            let app = Arc::downgrade(self);
            move || app.upgrade().map_or(0, |app| f(&app))
        };
        let gauge = |name, description, f: fn(&App) -> u64| {
            let read = read(f);
            metrics.gauge(name, description, move || vec![(read(), Vec::new())]);
        };
        gauge("authd.up", "Whether authd reports SERVING.", |app| {
            u64::from(app.state.is_serving())
        });
        gauge(
            "authd.revocations.live",
            "Revocations held in the in-process view.",
            |app| app.revoker.view().len() as u64,
        );
        gauge(
            "authd.revocation.feed.synced",
            "Whether the in-process revocation view is known current (1), or each credential is checked in Postgres (0).",
            |app| u64::from(app.revoker.feed().is_synced()),
        );
        gauge("authd.signing_keys.published", "Keys in the JWKS.", |app| {
            app.keys.current().jwks.len() as u64
        });
        gauge(
            "authd.token_cache.entries",
            "Verified access tokens held in the cache.",
            |app| app.authenticator.verified_tokens().len() as u64,
        );
        metrics.counter(
            "authd.token_cache.hits",
            "Access tokens answered from the cache of verified tokens.",
            read(|app| app.authenticator.verified_tokens().hits_and_misses().0),
        );
        metrics.counter(
            "authd.token_cache.misses",
            "Access tokens whose signature was checked.",
            read(|app| app.authenticator.verified_tokens().hits_and_misses().1),
        );
        gauge(
            "db.client.connection.max",
            "The most database connections the pool opens.",
            |app| u64::from(app.settings.database.pool_size),
        );
        let pool = Arc::downgrade(self);
        metrics.gauge(
            "db.client.connection.count",
            "Database connections open in the pool, by state (idle, used).",
            move || {
                let Some(app) = pool.upgrade() else { return Vec::new() };
                let state = app.pool.state();
                let kv = |s: &'static str| vec![KeyValue::new("db.client.connection.state", s)];
                vec![
                    (u64::from(state.idle_connections), kv("idle")),
                    (u64::from(state.connections - state.idle_connections), kv("used")),
                ]
            },
        );
        metrics.counter(
            "authd.db.pool.waits",
            "Connection checkouts that had to wait for a connection.",
            read(|app| app.pool.state().statistics.get_waited),
        );
        metrics.counter(
            "authd.db.pool.timeouts",
            "Connection checkouts that gave up waiting.",
            read(|app| app.pool.state().statistics.get_timed_out),
        );
        let pool = Arc::downgrade(self);
        metrics.seconds(
            "authd.db.pool.wait_time",
            "Total time spent waiting for a database connection.",
            move || {
                pool.upgrade()
                    .map(|app| app.pool.state().statistics.get_wait_time)
                    .unwrap_or_default()
            },
        );
    }

    /// Re-reads the signing keys; watchers hear of a change.
    pub async fn reload_keys(&self) -> bool {
        let now = self.clock.now();
        let settings = &self.settings;
        match self
            .keys
            .reload(
                &self.pool,
                &settings.tokens.key_encryption_key,
                now,
                key_publish_window(settings),
            )
            .await
        {
            Ok(changed) => {
                if changed {
                    let ring = self.keys.current();
                    let signer = ring.signer(now).map(|k| k.kid.clone()).unwrap_or_default();
                    tracing::info!(signing = %signer, published = ring.jwks.len(), "signing keys changed");
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reload signing keys");
                false
            }
        }
    }
}

/// Retired signing keys stay in the JWKS this long: every token they signed has expired by then
/// (a replica that has not reloaded yet may sign with one a little longer), plus the publish-ahead
/// margin that verifiers caching the JWKS rely on.
pub fn key_publish_window(settings: &Settings) -> Duration {
    settings.tokens.access_token_ttl
        + Duration::from_secs(120)
        + settings.intervals.key_refresh
        + settings.tokens.key_publish_ahead
}
