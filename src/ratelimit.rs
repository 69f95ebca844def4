//! Rate limits per client address, per account and per RPC (GCRA: a steady rate with a burst of
//! the same size). Shared by every replica through Redis (one atomic Lua script), with an
//! in-process fallback when Redis is absent or unreachable.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
pub const REVOKE_PER_CALLER: Limit = Limit {
    name: "revoke:caller",
    per_minute: 120,
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
}

/// The shared connection to Redis, with a circuit breaker. No lock is held across I/O: a call
/// clones the multiplexed connection and runs its script under a short timeout; the connection
/// is made in the background; and after a failure every call uses the in-process limiter until
/// one probe, [`BACKOFF_MS`] later, finds Redis answering again.
struct RedisLink {
    client: redis::Client,
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(0);
        let made = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_connection_manager_with_config(config)).await;
        match made {
            Ok(Ok(manager)) => {
                *self.connection.write().expect("rate limit connection lock") = Some(manager);
            }
            _ => self.failed(now),
        }
    }

    fn failed(&self, now: i64) {
        self.open_until.store(now + BACKOFF_MS, Ordering::Release);
    }

    fn succeeded(&self) {
        self.open_until.store(0, Ordering::Release);
    }
}

impl RateLimiter {
    pub fn new(enabled: bool, redis_url: Option<&str>, namespace: &str) -> anyhow::Result<Self> {
        let redis = redis_url.map(redis::Client::open).transpose()?.map(|client| {
            Arc::new(RedisLink {
                client,
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
        })
    }

    /// Connects to Redis before the first call (at start-up, so that limits are shared from the
    /// first request); gives up after a second, and later calls connect in the background.
    pub async fn connect(&self, now: DateTime<Utc>) {
        if let Some(link) = &self.redis {
            link.connect(now.timestamp_millis()).await;
        }
    }

    /// The storage key of `limit` for `subject`: fixed-size whatever the subject (a hash), so no
    /// input can make a large key, and no identifier is written to Redis as typed.
    fn key(&self, limit: Limit, subject: &str) -> String {
        let digest = Sha256::digest(subject.as_bytes());
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            let _ = write!(hex, "{byte:02x}");
        }
        format!("{}:rl:{}:{hex}", self.namespace, limit.name)
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
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
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
        if local.len() > 100_000 {
            local.retain(|_, tat| *tat > now);
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
            if !matches!(deleted, Ok(Ok(()))) {
                link.failed(now.timestamp_millis());
            }
        }
        self.local.lock().expect("rate limit lock").remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_a_steady_rate() {
        let limiter = RateLimiter::new(true, None, "t").unwrap();
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
            RateLimiter::new(false, None, "t")
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
        let limiter = Arc::new(RateLimiter::new(true, Some(&format!("redis://{addr}")), "t").unwrap());
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
