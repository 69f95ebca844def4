//! Connecting to Redis, one way for each of its users (the revocation feed's publisher, the rate
//! limiter): bounded timeouts on every attempt and on the whole of it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("timed out")]
    TimedOut,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A managed connection: each attempt gives up after `timeout`, each command after `response`,
/// and a lost connection is retried `retries` times (so the whole takes at most
/// `timeout × (retries + 1)`).
pub(crate) async fn connect(
    client: &redis::Client,
    timeout: Duration,
    response: Duration,
    retries: usize,
) -> Result<ConnectionManager, ConnectError> {
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
