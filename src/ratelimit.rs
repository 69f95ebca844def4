//! Rate limits per client address, per account and per RPC (GCRA: a steady rate with a burst of
//! the same size). Shared by every replica through Redis (one atomic Lua script), with an
//! in-process fallback when Redis is absent or unreachable.

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
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

pub struct RateLimiter {
    enabled: bool,
    namespace: String,
    redis: Option<redis::Client>,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    /// Key → theoretical arrival time (ms since the epoch), for when Redis cannot be used.
    local: Mutex<HashMap<String, i64>>,
}

impl RateLimiter {
    pub fn new(enabled: bool, redis_url: Option<&str>, namespace: &str) -> anyhow::Result<Self> {
        Ok(Self {
            enabled,
            namespace: namespace.to_string(),
            redis: redis_url.map(redis::Client::open).transpose()?,
            connection: tokio::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            local: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one call against `limit` for `subject`; `Err(retry_after)` when over it.
    pub async fn check(&self, limit: Limit, subject: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let key = format!("{}:rl:{}:{}", self.namespace, limit.name, subject);
        let now_ms = now.timestamp_millis();
        let interval = 60_000 / i64::from(limit.per_minute.max(1));
        let tolerance = interval * (i64::from(limit.per_minute.max(1)) - 1);
        if let Some(answer) = self.check_redis(&key, now_ms, interval, tolerance).await {
            return answer;
        }
        self.check_local(key, now_ms, interval, tolerance)
    }

    async fn check_redis(&self, key: &str, now: i64, interval: i64, tolerance: i64) -> Option<Result<(), Duration>> {
        let client = self.redis.as_ref()?;
        let mut guard = self.connection.lock().await;
        if guard.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_millis(500)))
                .set_number_of_retries(0);
            match tokio::time::timeout(
                Duration::from_secs(1),
                client.get_connection_manager_with_config(config),
            )
            .await
            {
                Ok(Ok(manager)) => *guard = Some(manager),
                _ => return None,
            }
        }
        let manager = guard.as_mut()?;
        let result: redis::RedisResult<(i64, i64)> = self
            .script
            .key(key)
            .arg(now)
            .arg(interval)
            .arg(tolerance)
            .invoke_async(manager)
            .await;
        match result {
            Ok((1, _)) => Some(Ok(())),
            Ok((_, retry)) => Some(Err(Duration::from_millis(u64::try_from(retry).unwrap_or(0)))),
            Err(e) => {
                tracing::warn!(error = %e, "rate limits fall back to this replica alone");
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
        assert!(
            RateLimiter::new(false, None, "t")
                .unwrap()
                .check(limit, "a", now)
                .await
                .is_ok()
        );
    }
}
