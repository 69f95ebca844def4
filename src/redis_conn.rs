//! Connecting to Redis, one way for each of its users (the revocation feed's publisher and
//! subscriber, the rate limiter): bounded timeouts on every attempt and on the whole of it.
//!
//! `AUTHD_REDIS_URL` names either one server (`redis://`) or a set watched by Redis Sentinel
//! (`redis+sentinel://host:port,host:port/mymaster`). For the latter every new connection asks
//! the sentinels which server is the master now, so a connection lost in a failover is made
//! again to the promoted replica. The users drop a connection on any failure for that reason:
//! a kept one would reconnect to the address it was made for.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{IntoConnectionInfo, RedisConnectionInfo};
use std::time::Duration;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("timed out")]
    TimedOut,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Where Redis is.
pub(crate) enum Target {
    /// One server.
    Server(redis::Client),
    /// The master of a set watched by these sentinels (a client for each, asked at once), asked
    /// for each connection.
    Sentinel(Vec<tokio::sync::Mutex<SentinelClient>>),
}

/// The sentinels' default port.
const SENTINEL_PORT: u16 = 26379;

impl Target {
    /// Reads `AUTHD_REDIS_URL`. Connects later. The error never repeats the URL (it may hold a
    /// password).
    pub(crate) fn open(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let parsed = SentinelUrl::parse(rest).map_err(|e| anyhow::anyhow!("AUTHD_REDIS_URL: {e}"))?;
            let clients = parsed
                .sentinels
                .into_iter()
                .map(|sentinel| {
                    SentinelClient::build(
                        vec![sentinel],
                        parsed.service.clone(),
                        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(parsed.master.clone())),
                        SentinelServerType::Master,
                    )
                    .map(tokio::sync::Mutex::new)
                    .map_err(|e| anyhow::anyhow!("AUTHD_REDIS_URL: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(Self::Sentinel(clients));
        }
        redis::Client::open(url)
            .map(Self::Server)
            .map_err(|e| anyhow::anyhow!("AUTHD_REDIS_URL: {e}"))
    }

    /// Whether the server to use may change (a connection should then be made afresh after a
    /// failure).
    pub(crate) fn follows_failovers(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// A client for the server to use now: the one configured, or the master the sentinels
    /// name (all are asked at once, so one that does not answer holds nothing up; the first
    /// answer whose server calls itself master decides). Gives up after `timeout`.
    pub(crate) async fn client(&self, timeout: Duration) -> Result<redis::Client, ConnectError> {
        match self {
            Self::Server(client) => Ok(client.clone()),
            Self::Sentinel(sentinels) => {
                let asks = sentinels
                    .iter()
                    .map(|sentinel| Box::pin(async move { sentinel.lock().await.async_get_client().await }));
                match tokio::time::timeout(timeout, futures_util::future::select_ok(asks)).await {
                    Ok(Ok((found, _))) => Ok(found),
                    Ok(Err(last)) => Err(last.into()),
                    Err(_) => Err(ConnectError::TimedOut),
                }
            }
        }
    }
}

/// `[user[:password]@]host[:port][,host[:port]…]/service[/db]`, what follows
/// `redis+sentinel://`. The credentials and database are for the master, not the sentinels.
struct SentinelUrl {
    sentinels: Vec<String>,
    service: String,
    master: RedisConnectionInfo,
}

impl SentinelUrl {
    fn parse(rest: &str) -> Result<Self, &'static str> {
        // The credentials end at the last `@` (no sentinel or master name holds one); a `/` in
        // them must be percent-encoded, else the master's URL is refused below.
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("a Sentinel URL needs the master's name as its path")?;
        let sentinels = hosts
            .split(',')
            .map(|host| {
                let host = host.trim();
                if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                    return Err("each sentinel is host or host:port, separated by commas");
                }
                let has_port = match host.rfind(']') {
                    Some(end) => host[end..].contains(':'),
                    None => host.contains(':'),
                };
                Ok(if has_port {
                    format!("redis://{host}")
                } else {
                    format!("redis://{host}:{SENTINEL_PORT}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (service, db) = match path.split_once('/') {
            Some((service, db)) => (service, Some(db)),
            None => (path, None),
        };
        let service = service.trim_end_matches('/');
        if service.is_empty() || service.contains(['?', '#']) {
            return Err("a Sentinel URL needs the master's name as its path");
        }
        // The master's credentials and database, read the way the redis crate reads a URL
        // (percent-decoding included); the address is a placeholder the sentinels replace.
        let mut master_url = String::from("redis://");
        if let Some(credentials) = credentials {
            master_url.push_str(credentials);
            master_url.push('@');
        }
        master_url.push_str("sentinel.invalid/");
        if let Some(db) = db.filter(|db| !db.is_empty()) {
            if db.parse::<u16>().is_err() {
                return Err("the database after the master's name must be a number");
            }
            master_url.push_str(db);
        }
        let master = master_url
            .as_str()
            .into_connection_info()
            .map_err(|_| "cannot read the credentials of a Sentinel URL")?
            .redis_settings()
            .clone();
        Ok(Self {
            sentinels,
            service: service.to_string(),
            master,
        })
    }
}

/// A managed connection: each attempt gives up after `timeout`, each command after `response`,
/// and a lost connection is retried `retries` times (so the whole takes at most
/// `timeout × (retries + 2)`, the first `timeout` to find the server).
pub(crate) async fn connect(
    target: &Target,
    timeout: Duration,
    response: Duration,
    retries: usize,
) -> Result<ConnectionManager, ConnectError> {
    let client = target.client(timeout).await?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(response))
        .set_number_of_retries(retries)
        .set_max_delay(Duration::from_millis(500));
    let attempts = u32::try_from(retries + 1).unwrap_or(u32::MAX);
    match tokio::time::timeout(timeout * attempts, client.get_connection_manager_with_config(config)).await {
        Ok(made) => Ok(made?),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_its_credentials() {
        let url = SentinelUrl::parse("user:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:5000/mymaster/3").unwrap();
        assert_eq!(
            url.sentinels,
            [
                "redis://10.0.0.1:26380",
                "redis://sentinel-b:26379",
                "redis://[::1]:5000"
            ]
        );
        assert_eq!(url.service, "mymaster");
        assert_eq!(url.master.username(), Some("user"));
        assert_eq!(url.master.password(), Some("p@ss"));
        assert_eq!(url.master.db(), 3);

        // The credentials end at the last `@`: a percent-encoded password reads back, and a raw
        // `/` in one is refused rather than read as a sentinel's address.
        let encoded = SentinelUrl::parse(":pa%2Fs%40s@10.0.0.1/mymaster").unwrap();
        assert_eq!(encoded.sentinels, ["redis://10.0.0.1:26379"]);
        assert_eq!(encoded.master.password(), Some("pa/s@s"));
        assert!(SentinelUrl::parse(":pa/ss@10.0.0.1/mymaster").is_err());

        let plain = SentinelUrl::parse("127.0.0.1:26379/mymaster").unwrap();
        assert_eq!(plain.master.password(), None);
        assert_eq!(plain.master.db(), 0);
        assert!(matches!(
            Target::open("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"),
            Ok(Target::Sentinel(_))
        ));
    }

    #[test]
    fn malformed_sentinel_urls_are_refused_without_echoing_them() {
        for bad in [
            "127.0.0.1:26379",
            "127.0.0.1:26379/",
            ",127.0.0.1:26379/mymaster",
            "127.0.0.1:26379/mymaster/zero",
            "127.0.0.1:26379/mymaster?x=1",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
        let Err(e) = Target::open("redis+sentinel://user:hunter2@127.0.0.1:26379") else {
            panic!("accepted a URL without a master name");
        };
        assert!(!e.to_string().contains("hunter2"));
    }
}
