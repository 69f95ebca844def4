//! The revocation feed between replicas. Postgres holds the record; Redis carries each event to
//! every replica at once (PUBLISH), with a deny entry that lives as long as the credentials it
//! concerns. Without Redis (single-node mode) the feed is in-process only.
//!
//! A replica is *synced* while it follows the Redis channel and has caught up with Postgres since
//! it subscribed. Only then may it trust its in-process view alone; otherwise each credential is
//! checked in Postgres too (security rule 7).

use super::{Revocation, RevocationKind};
use crate::redis_conn::{ConnectError, Target};
use chrono::DateTime;
use redis::aio::{ConnectionManager, PubSub};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::Instrument as _;
use uuid::Uuid;

const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What travels on the Redis channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedMessage {
    Revocation {
        origin: String,
        kind: String,
        subject_id: String,
        user_id: Option<Uuid>,
        created_at_us: i64,
        expires_at_us: i64,
    },
    /// The signing keys changed (`authd keys rotate`): reload them now.
    KeysChanged { origin: String },
}

impl FeedMessage {
    pub fn origin(&self) -> &str {
        match self {
            Self::Revocation { origin, .. } | Self::KeysChanged { origin } => origin,
        }
    }

    fn revocation(origin: &str, revocation: &Revocation) -> Self {
        Self::Revocation {
            origin: origin.to_string(),
            kind: revocation.kind.as_str().to_string(),
            subject_id: revocation.subject_id.clone(),
            user_id: revocation.user_id,
            created_at_us: revocation.created_at.timestamp_micros(),
            expires_at_us: revocation.expires_at.timestamp_micros(),
        }
    }

    /// The revocation carried, if this is one and it is well-formed.
    pub fn to_revocation(&self) -> Option<Revocation> {
        let Self::Revocation {
            kind,
            subject_id,
            user_id,
            created_at_us,
            expires_at_us,
            ..
        } = self
        else {
            return None;
        };
        Some(Revocation {
            kind: RevocationKind::parse(kind)?,
            subject_id: subject_id.clone(),
            user_id: *user_id,
            created_at: DateTime::from_timestamp_micros(*created_at_us)?,
            expires_at: DateTime::from_timestamp_micros(*expires_at_us)?,
        })
    }
}

/// This replica's end of the feed.
pub struct Feed {
    redis: Option<Target>,
    publisher: Mutex<Option<ConnectionManager>>,
    namespace: String,
    /// Identifies this replica's own messages when they come back on the channel.
    origin: String,
    synced: AtomicBool,
}

impl Feed {
    /// `redis_url` unset means single-node mode. Validates the URL; connects later.
    pub fn new(redis_url: Option<&str>, namespace: &str) -> anyhow::Result<Self> {
        let redis = redis_url.map(Target::open).transpose()?;
        Ok(Self {
            synced: AtomicBool::new(redis.is_none()),
            redis,
            publisher: Mutex::new(None),
            namespace: namespace.to_string(),
            origin: Uuid::new_v4().simple().to_string(),
        })
    }

    pub fn is_distributed(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether the in-process view can be trusted alone.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    pub(crate) fn set_synced(&self, synced: bool) {
        if self.is_distributed() {
            self.synced.store(synced, Ordering::SeqCst);
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn channel(&self) -> String {
        format!("{}:events", self.namespace)
    }

    fn deny_key(&self, revocation: &Revocation) -> String {
        format!(
            "{}:revoked:{}:{}",
            self.namespace,
            revocation.kind.as_str(),
            revocation.subject_id
        )
    }

    /// Publishes revocations with their deny entries. Failures are logged, never raised: the
    /// record is in Postgres, and replicas that lose the feed check Postgres.
    pub async fn publish_revocations(&self, revocations: &[Revocation]) {
        if revocations.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for revocation in revocations {
            let message =
                serde_json::to_string(&FeedMessage::revocation(&self.origin, revocation)).expect("serialisable");
            let expires_ms = u64::try_from(revocation.expires_at.timestamp_millis()).unwrap_or(0);
            pipe.cmd("SET")
                .arg(self.deny_key(revocation))
                .arg(revocation.created_at.timestamp_micros())
                .arg("PXAT")
                .arg(expires_ms)
                .ignore();
            pipe.cmd("PUBLISH").arg(self.channel()).arg(message).ignore();
        }
        self.send(pipe).await;
    }

    pub async fn publish(&self, message: FeedMessage) {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(self.channel())
            .arg(serde_json::to_string(&message).expect("serialisable"))
            .ignore();
        self.send(pipe).await;
    }

    async fn send(&self, pipe: redis::Pipeline) {
        let Some(target) = &self.redis else {
            return;
        };
        let span = crate::telemetry::spans::client("redis", "PUBLISH");
        self.send_on(target, pipe).instrument(span).await;
    }

    /// Sends on the kept connection; after a failure, once more on a new one (to the master the
    /// sentinels name now, after a failover).
    async fn send_on(&self, target: &Target, pipe: redis::Pipeline) {
        let mut guard = self.publisher.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                match crate::redis_conn::connect(target, REDIS_TIMEOUT, REDIS_TIMEOUT, 0).await {
                    Ok(manager) => *guard = Some(manager),
                    Err(e) => {
                        return tracing::warn!(error = %e, "cannot reach Redis to publish; other replicas re-read Postgres");
                    }
                }
            }
            let Some(manager) = guard.as_mut() else { return };
            let result: redis::RedisResult<()> = pipe.query_async(manager).await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        tracing::warn!(error = %e, "publishing to Redis failed; other replicas re-read Postgres");
                    }
                }
            }
        }
    }

    /// A fresh subscription to the channel (the caller reads it).
    pub async fn subscribe(&self) -> redis::RedisResult<Option<PubSub>> {
        let Some(target) = &self.redis else {
            return Ok(None);
        };
        let client = target.client(REDIS_TIMEOUT).await.map_err(|e| match e {
            ConnectError::Redis(e) => e,
            ConnectError::TimedOut => redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        })?;
        let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT * 2, client.get_async_pubsub())
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        tokio::time::timeout(REDIS_TIMEOUT * 2, pubsub.subscribe(self.channel()))
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        Ok(Some(pubsub))
    }
}

/// Publishes one message and returns; for commands such as `authd keys rotate`.
pub async fn announce(redis_url: &str, namespace: &str, message: FeedMessage) -> anyhow::Result<()> {
    let feed = Feed::new(Some(redis_url), namespace)?;
    feed.publish(message).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn messages_round_trip() {
        let now = Utc::now();
        let revocation = Revocation {
            kind: RevocationKind::Session,
            subject_id: "s".into(),
            user_id: Some(Uuid::now_v7()),
            created_at: DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap(),
            expires_at: DateTime::from_timestamp_micros(now.timestamp_micros() + 1000).unwrap(),
        };
        let message = FeedMessage::revocation("me", &revocation);
        let text = serde_json::to_string(&message).unwrap();
        let back: FeedMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_revocation(), Some(revocation));
        assert_eq!(back.origin(), "me");
        let keys: FeedMessage = serde_json::from_str(r#"{"type":"keys_changed","origin":"cli"}"#).unwrap();
        assert_eq!(keys, FeedMessage::KeysChanged { origin: "cli".into() });
        assert!(serde_json::from_str::<FeedMessage>(r#"{"type":"nonsense"}"#).is_err());
    }
}
