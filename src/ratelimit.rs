//! Rate limits per client address, per account and per RPC (GCRA: a steady rate with a burst of
//! the same size). Shared by every replica through Redis (one atomic Lua script), with an
//! in-process fallback when Redis is absent or unreachable.

use crate::identity::ClientInfo;
use crate::redis_conn::Target;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::Instrument as _;

/// A limit: `per_minute` calls, in a burst or spread out.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub name: &'static str,
    pub per_minute: u32,
}

pub const LOGIN_PER_ACCOUNT: Limit = Limit {
    name: "login:account",
    per_minute: 5,
};
pub const LOGIN_PER_ADDRESS: Limit = Limit {
    name: "login:address",
    per_minute: 20,
};
pub const REGISTER_PER_ADDRESS: Limit = Limit {
    name: "register:address",
    per_minute: 3,
};
pub const MAIL_PER_ADDRESS: Limit = Limit {
    name: "mail:address",
    per_minute: 3,
};
pub const PROVIDER_LOGIN_PER_ADDRESS: Limit = Limit {
    name: "provider_login:address",
    per_minute: 10,
};

/// GCRA over Redis: the stored value is the theoretical arrival time (ms); answers
/// {allowed, retry_after_ms}.
const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return {0, allow_at - now} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now + interval)
return {1, 0}
"#;

/// Calls that check the account's password again (`ChangePassword`, a change of address).
pub const PASSWORD_CHECK_PER_ACCOUNT: Limit = Limit {
    name: "password_check:account",
    per_minute: 5,
};
/// The RPCs that spend a mailed one-time token (reset, verification, deletion).
pub const TOKEN_PER_ADDRESS: Limit = Limit {
    name: "one_time_token:address",
    per_minute: 10,
};
pub const API_KEY_CREATE_PER_ACCOUNT: Limit = Limit {
    name: "api_key_create:account",
    per_minute: 20,
};
pub const REVOKE_PER_CALLER: Limit = Limit {
    name: "revoke:caller",
    per_minute: 120,
};
/// `/forward-auth`, which anyone who reaches the HTTP port may ask: per end-user address when
/// the gateway is in `AUTHD_TRUSTED_PROXIES`, else per gateway.
pub const FORWARD_AUTH_PER_ADDRESS: Limit = Limit {
    name: "forward_auth:address",
    per_minute: 1200,
};
/// Opening a page a mailed link leads to (`GET /reset-password` and the others: each reads the
/// token's state); submitting one counts as [`TOKEN_PER_ADDRESS`].
pub const PAGE_VIEW_PER_ADDRESS: Limit = Limit {
    name: "mail_page:address",
    per_minute: 60,
};

/// How long one script call may take before Redis counts as failing.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a connection attempt may take (it runs in the background; no call waits for it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, calls skip Redis this long; then one call probes it again.
const BACKOFF_MS: i64 = 5_000;

pub struct RateLimiter {
    enabled: bool,
    namespace: String,
    redis: Option<Arc<RedisLink>>,
    script: redis::Script,
    /// Key → theoretical arrival time (ms since the epoch), for when Redis cannot be used.
    local: Mutex<HashMap<String, i64>>,
    /// Keys subjects into storage keys (see [`RateLimiter::key`]), derived once.
    subject_key: Secret<[u8; 32]>,
}

/// Live keys the in-process limiter holds at most; past it, expired ones are dropped, and if
/// that is not enough the oldest half of the map goes (those subjects start afresh).
const MAX_LOCAL_KEYS: usize = 100_000;

/// The shared connection to Redis, with a circuit breaker. No lock is held across I/O: a call
/// clones the multiplexed connection and runs its script under a short timeout; the connection
/// is made in the background; and after a failure every call uses the in-process limiter until
/// one probe, [`BACKOFF_MS`] later, finds Redis answering again.
struct RedisLink {
    target: Target,
    connection: RwLock<Option<ConnectionManager>>,
    connecting: AtomicBool,
    /// Milliseconds since the epoch until which Redis is not tried; 0 when it is healthy.
    open_until: AtomicI64,
}

impl RedisLink {
    /// A connection to use now, or `None` (circuit open, or not connected yet: a connection is
    /// then started in the background).
    fn usable(self: &Arc<Self>, now: i64) -> Option<ConnectionManager> {
        let open = self.open_until.load(Ordering::Acquire);
        if open != 0 {
            // Half-open: the first call past the back-off probes; the others stay local.
            if now < open
                || self
                    .open_until
                    .compare_exchange(open, now + BACKOFF_MS, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return None;
            }
        }
        let connection = self.connection.read().expect("rate limit connection lock").clone();
        if connection.is_none() {
            self.connect_in_background(now);
        }
        connection
    }

    fn connect_in_background(self: &Arc<Self>, now: i64) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            link.connect(now).await;
            link.connecting.store(false, Ordering::Release);
        });
    }

    async fn connect(&self, now: i64) {
        match crate::redis_conn::connect(&self.target, CONNECT_TIMEOUT, CALL_TIMEOUT, 0).await {
            Ok(manager) => {
                *self.connection.write().expect("rate limit connection lock") = Some(manager);
                self.succeeded();
            }
            _ => self.failed(now),
        }
    }

    /// Opens the circuit. Behind Sentinel it also drops the connection, so the next one is made
    /// to the master the sentinels name then (a kept one reconnects to the same server, which is
    /// right for a single server).
    fn failed(&self, now: i64) {
        self.open_until.store(now + BACKOFF_MS, Ordering::Release);
        if self.target.follows_failovers() {
            self.connection.write().expect("rate limit connection lock").take();
        }
    }

    fn succeeded(&self) {
        self.open_until.store(0, Ordering::Release);
    }
}

impl RateLimiter {
    /// `subject_key` keys the digests that name subjects in storage (derive it from the
    /// key-encryption key).
    pub fn new(
        enabled: bool,
        redis_url: Option<&str>,
        namespace: &str,
        subject_key: Secret<[u8; 32]>,
    ) -> anyhow::Result<Self> {
        let redis = redis_url.map(Target::open).transpose()?.map(|target| {
            Arc::new(RedisLink {
                target,
                connection: RwLock::new(None),
                connecting: AtomicBool::new(false),
                open_until: AtomicI64::new(0),
            })
        });
        Ok(Self {
            enabled,
            namespace: namespace.to_string(),
            redis,
            script: redis::Script::new(SCRIPT),
            local: Mutex::new(HashMap::new()),
            subject_key: crate::crypto::derive_key(&subject_key, "rate limit subject"),
        })
    }

    /// Connects to Redis before the first call (at start-up, so that limits are shared from the
    /// first request); gives up after a second, and later calls connect in the background.
    pub async fn connect(&self, now: DateTime<Utc>) {
        if !self.enabled {
            return;
        }
        if let Some(link) = &self.redis {
            link.connect(now.timestamp_millis()).await;
        }
    }

    /// The storage key of `limit` for `subject`: fixed-size whatever the subject (a keyed
    /// digest), so no input can make a large key, and no identifier is written to Redis as typed
    /// or in a form a dictionary could reverse.
    fn key(&self, limit: Limit, subject: &str) -> String {
        let digest = crate::crypto::digest_with(&self.subject_key, subject.as_bytes());
        format!("{}:rl:{}:{digest}", self.namespace, limit.name)
    }

    /// Counts one call against `limit` for `subject`; `Err(retry_after)` when over it.
    pub async fn check(&self, limit: Limit, subject: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let key = self.key(limit, subject);
        let now_ms = now.timestamp_millis();
        let interval = 60_000 / i64::from(limit.per_minute.max(1));
        let tolerance = interval * (i64::from(limit.per_minute.max(1)) - 1);
        if let Some(answer) = self.check_redis(&key, now_ms, interval, tolerance).await {
            return answer;
        }
        self.check_local(key, now_ms, interval, tolerance)
    }

    async fn check_redis(&self, key: &str, now: i64, interval: i64, tolerance: i64) -> Option<Result<(), Duration>> {
        let link = self.redis.as_ref()?;
        let mut connection = link.usable(now)?;
        let mut invocation = self.script.key(key);
        invocation.arg(now).arg(interval).arg(tolerance);
        let call = invocation.invoke_async::<(i64, i64)>(&mut connection);
        let span = crate::telemetry::spans::client("redis", "EVALSHA");
        match tokio::time::timeout(CALL_TIMEOUT, call).instrument(span).await {
            Ok(Ok((allowed, retry))) => {
                link.succeeded();
                Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(Duration::from_millis(u64::try_from(retry).unwrap_or(0)))
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate limits fall back to this replica alone for a while");
                link.failed(now);
                None
            }
            Err(_) => {
                tracing::warn!("Redis did not answer in time; rate limits fall back to this replica alone for a while");
                link.failed(now);
                None
            }
        }
    }

    fn check_local(&self, key: String, now: i64, interval: i64, tolerance: i64) -> Result<(), Duration> {
        let mut local = self.local.lock().expect("rate limit lock");
        if local.len() >= MAX_LOCAL_KEYS {
            local.retain(|_, tat| *tat > now);
            if local.len() >= MAX_LOCAL_KEYS / 2 {
                // Still full of live keys: keep the busier half (the latest arrival times), so
                // the sweep is not repeated on every call.
                let mut times: Vec<i64> = local.values().copied().collect();
                let (_, median, _) = times.select_nth_unstable(local.len() / 2);
                let median = *median;
                local.retain(|_, tat| *tat > median);
            }
        }
        let tat = local.get(&key).copied().unwrap_or(now).max(now);
        let allow_at = tat - tolerance;
        if now < allow_at {
            return Err(Duration::from_millis(u64::try_from(allow_at - now).unwrap_or(0)));
        }
        local.insert(key, tat + interval);
        Ok(())
    }

    /// Forgets what `subject` has used of `limit` (an unlocked account starts afresh), in Redis
    /// when it answers and on this replica.
    pub async fn reset(&self, limit: Limit, subject: &str, now: DateTime<Utc>) {
        let key = self.key(limit, subject);
        if let Some(link) = &self.redis
            && let Some(mut connection) = link.usable(now.timestamp_millis())
        {
            let deleted = tokio::time::timeout(CALL_TIMEOUT, connection.del::<_, ()>(&key)).await;
            if matches!(deleted, Ok(Ok(()))) {
                link.succeeded();
            } else {
                link.failed(now.timestamp_millis());
            }
        }
        self.local.lock().expect("rate limit lock").remove(&key);
    }
}

/// The limits as the RPCs meet them: a call over a limit is refused, and the refusal reaches the
/// audit trail as one summary per limit and subject each minute (see
/// [`crate::audit::AuditLog::flush_refusals`]).
pub struct Limits {
    limiter: RateLimiter,
    audit_log: Arc<crate::audit::AuditLog>,
    clock: crate::clock::Clock,
    /// Refusals, by the limit's name (`rule`).
    refusals: opentelemetry::metrics::Counter<u64>,
}

impl Limits {
    pub fn new(
        limiter: RateLimiter,
        audit_log: Arc<crate::audit::AuditLog>,
        clock: crate::clock::Clock,
        refusals: opentelemetry::metrics::Counter<u64>,
    ) -> Self {
        Self {
            limiter,
            audit_log,
            clock,
            refusals,
        }
    }

    /// See [`RateLimiter::connect`].
    pub async fn connect(&self) {
        self.limiter.connect(self.clock.now()).await;
    }

    /// Counts a call against a limit; over it, refuses.
    pub async fn enforce(&self, limit: Limit, subject: &str, client: &ClientInfo) -> crate::error::Result<()> {
        self.enforce_for(limit, subject, None, client).await
    }

    /// [`Limits::enforce`] for a subject that is a known account.
    pub async fn enforce_for(
        &self,
        limit: Limit,
        subject: &str,
        user_id: Option<uuid::Uuid>,
        client: &ClientInfo,
    ) -> crate::error::Result<()> {
        match self.limiter.check(limit, subject, self.clock.now()).await {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                self.refusals
                    .add(1, &[opentelemetry::KeyValue::new("rule", limit.name)]);
                self.audit_log.note_refusal(limit.name, subject, user_id, client);
                Err(crate::error::Error::RateLimited(retry_after))
            }
        }
    }

    /// See [`RateLimiter::reset`].
    pub async fn reset(&self, limit: Limit, subject: &str, now: DateTime<Utc>) {
        self.limiter.reset(limit, subject, now).await;
    }
}

#[cfg(test)]
fn test_key() -> Secret<[u8; 32]> {
    Secret::new([7; 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_a_steady_rate() {
        let limiter = RateLimiter::new(true, None, "t", test_key()).unwrap();
        let limit = Limit {
            name: "x",
            per_minute: 3,
        };
        let now = Utc::now();
        for _ in 0..3 {
            assert!(limiter.check(limit, "a", now).await.is_ok());
        }
        let retry = limiter.check(limit, "a", now).await.unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(20), "{retry:?}");
        assert!(
            limiter.check(limit, "b", now).await.is_ok(),
            "another subject has its own budget"
        );
        assert!(
            limiter
                .check(limit, "a", now + chrono::Duration::seconds(20))
                .await
                .is_ok(),
            "one more every 20 s"
        );
        limiter.reset(limit, "a", now).await;
        assert!(limiter.check(limit, "a", now).await.is_ok(), "a reset starts afresh");
        assert!(
            RateLimiter::new(false, None, "t", test_key())
                .unwrap()
                .check(limit, "a", now)
                .await
                .is_ok()
        );
    }
}

#[cfg(test)]
mod redis_trouble {
    use super::*;

    /// Redis that accepts connections and never answers: no call may wait for it, nor queue
    /// behind another call that does.
    #[tokio::test]
    async fn a_black_holed_redis_never_holds_up_a_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let limiter = Arc::new(RateLimiter::new(true, Some(&format!("redis://{addr}")), "t", test_key()).unwrap());
        let limit = Limit {
            name: "x",
            per_minute: 1000,
        };
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.check(limit, &format!("s{i}"), Utc::now()).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_ok(), "the in-process limiter answers");
        }
        // Serialised behind a connection attempt (the old design) this took 50 × 1 s.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "calls waited for Redis: {:?}",
            started.elapsed()
        );
        held.abort();
    }
}

#[cfg(test)]
mod redis_partition {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP relay to Redis that can stop passing bytes (a partition) and start again.
    async fn relay(target: std::net::SocketAddr, paused: Arc<AtomicBool>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = paused.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        while up.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let down = paused.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                        while down.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Redis stops answering after a healthy start: one call waits out the timeout, the breaker
    /// opens, the calls after it answer at once from this replica, and once Redis answers again a
    /// probe closes the breaker and the limits are shared again.
    #[tokio::test]
    async fn a_partitioned_redis_trips_the_breaker_and_a_probe_restores_it() {
        // Set by scripts/test.sh, which starts the Redis this needs.
        let Ok(url) = std::env::var("AUTHD_TEST_REDIS_URL") else {
            eprintln!("AUTHD_TEST_REDIS_URL is not set: run through scripts/test.sh");
            return;
        };
        let target = url.trim_start_matches("redis://").parse().expect("redis://host:port");
        let paused = Arc::new(AtomicBool::new(false));
        let relayed = format!("redis://{}", relay(target, paused.clone()).await);
        let namespace = format!("t{}", uuid::Uuid::new_v4().simple());
        let a = Arc::new(RateLimiter::new(true, Some(&relayed), &namespace, test_key()).unwrap());
        let b = RateLimiter::new(true, Some(&url), &namespace, test_key()).unwrap();
        a.connect(Utc::now()).await;
        b.connect(Utc::now()).await;
        let limit = Limit {
            name: "p",
            per_minute: 2,
        };
        let shared = async |subject: &str| {
            assert!(a.check(limit, subject, Utc::now()).await.is_ok());
            assert!(a.check(limit, subject, Utc::now()).await.is_ok());
            b.check(limit, subject, Utc::now()).await.is_err()
        };
        assert!(shared("one").await, "counted in Redis, so B sees A's calls");

        paused.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        assert!(a.check(limit, "two", Utc::now()).await.is_ok(), "answered locally");
        assert!(started.elapsed() >= CALL_TIMEOUT && started.elapsed() < Duration::from_secs(2));
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move { a.check(limit, &format!("s{i}"), Utc::now()).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_ok());
        }
        assert!(
            started.elapsed() < CALL_TIMEOUT,
            "with the breaker open no call waits: {:?}",
            started.elapsed()
        );

        paused.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(BACKOFF_MS as u64 + 200)).await;
        // The first call past the back-off probes Redis; once it answers, limits are shared.
        let _ = a.check(limit, "probe", Utc::now()).await;
        assert!(shared("three").await, "shared again after the probe");
    }
}
