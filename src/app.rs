//! The shared context of every domain service: settings, the pool, the clock, keys, the
//! revocation view and the password hasher. Domain modules add their rules as `impl App` blocks.

use crate::accounts::PasswordHasher;
use crate::api_keys::ApiKeyCache;
use crate::clock::Clock;
use crate::config::Settings;
use crate::error::Result;
use crate::revocation::{Revocation, RevocationView};
use crate::store::{self, Pool};
use crate::tokens::{SigningKeys, TokenIssuer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct App {
    pub settings: Settings,
    pub pool: Pool,
    pub clock: Clock,
    pub keys: SigningKeys,
    pub issuer: TokenIssuer,
    pub revocations: RevocationView,
    pub hasher: PasswordHasher,
    pub api_keys: ApiKeyCache,
    serving: AtomicBool,
}

/// Where a call came from, for sessions and (later) the audit trail.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl App {
    /// Connects, loads keys and live revocations. The schema must be current.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Arc<Self>> {
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
        let app = Arc::new(Self {
            settings,
            pool,
            clock,
            keys,
            issuer,
            revocations: RevocationView::default(),
            hasher,
            api_keys: ApiKeyCache::default(),
            serving: AtomicBool::new(false),
        });
        app.load_revocations().await?;
        Ok(app)
    }

    /// Rebuilds the revocation view from Postgres.
    pub async fn load_revocations(&self) -> Result<usize> {
        let now = self.clock.now();
        let rows = {
            let mut conn = store::conn(&self.pool).await?;
            store::revocations::live(&mut conn, now).await?
        };
        let revocations: Vec<Revocation> = rows.iter().filter_map(Revocation::from_row).collect();
        self.revocations.apply_all(&revocations);
        self.revocations.prune(now);
        Ok(revocations.len())
    }

    /// How long after the revocation instant a revoked access token could still be presented.
    pub fn revocation_lifetime(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.access_token_ttl).unwrap_or(chrono::Duration::hours(1))
            + chrono::Duration::seconds(crate::tokens::jwt::LEEWAY_SECS + 60)
    }

    /// Records revocations (in the caller's transaction when given a connection) and applies them
    /// to the in-process view.
    pub fn apply_revocations(&self, revocations: &[Revocation]) {
        self.revocations.apply_all(revocations);
        for revocation in revocations {
            if revocation.kind == crate::revocation::RevocationKind::ApiKey {
                self.api_keys.forget_id(&revocation.subject_id);
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
}

/// Retired signing keys stay in the JWKS this long: every token they signed has expired by then.
pub fn key_publish_window(settings: &Settings) -> Duration {
    settings.access_token_ttl + Duration::from_secs(120) + settings.key_refresh_interval
}
