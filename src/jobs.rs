//! Background work of a running server. Every loop ends when the server begins to shut down.
//!
//! - health follows database reachability;
//! - the feed publisher sends this replica's revocations to Redis;
//! - the feed follower applies other replicas' revocations, and decides when this replica's view
//!   is synced;
//! - the resync re-reads recent revocations from Postgres, the safety net under the feed;
//! - upkeep writes API-key usage, reloads signing keys and forgets expired revocations.

use crate::app::App;
use crate::revocation::FeedMessage;
use crate::startup::{set_all, stopped};
use crate::store;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A silent Redis (a partition, not a refused connection) is noticed within about 1.5 s.
const FEED_PING_INTERVAL: Duration = Duration::from_secs(1);
const FEED_PING_TIMEOUT: Duration = Duration::from_millis(500);
const FEED_RETRY_MIN: Duration = Duration::from_millis(200);
const FEED_RETRY_MAX: Duration = Duration::from_secs(2);

pub fn spawn(app: Arc<App>, health: HealthReporter) -> Vec<JoinHandle<()>> {
    let mut jobs = vec![
        tokio::spawn(probe_database(app.clone(), health)),
        tokio::spawn(upkeep(app.clone())),
        tokio::spawn(resync_revocations(app.clone())),
    ];
    if app.feed.is_distributed() {
        jobs.push(tokio::spawn(publish_feed(app.clone())));
        jobs.push(tokio::spawn(follow_feed(app)));
    }
    jobs
}

async fn probe_database(app: Arc<App>, health: HealthReporter) {
    let mut stop = app.shutdown_signal();
    let mut serving = true;
    let mut tick = tokio::time::interval(app.settings.health_probe_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let reachable = store::ping(&app.pool).await.is_ok();
        if reachable == serving || *stop.borrow() {
            continue;
        }
        serving = reachable;
        if reachable {
            // Catch up on revocations written while we could not read them.
            if let Err(e) = app.catch_up_revocations().await {
                tracing::warn!(error = %e, "could not reload revocations");
            }
            tracing::info!("database reachable again: SERVING");
            set_all(&app, &health, ServingStatus::Serving).await;
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            set_all(&app, &health, ServingStatus::NotServing).await;
        }
    }
}

async fn upkeep(app: Arc<App>) {
    let mut stop = app.shutdown_signal();
    let settings = &app.settings;
    let mut flush = tokio::time::interval(settings.usage_flush_interval);
    let mut keys = tokio::time::interval(settings.key_refresh_interval);
    flush.tick().await;
    keys.tick().await;
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if let Err(e) = app.flush_api_key_usage().await {
                    tracing::warn!(error = %e, "could not write API key usage");
                }
            }
            _ = keys.tick() => {
                app.reload_keys().await;
                app.revocations.prune(app.clock.now());
            }
            () = stopped(&mut stop) => return,
        }
    }
}

/// Re-reads the last two minutes of revocations every `AUTHD_REVOCATION_RESYNC_INTERVAL`, in
/// both modes: it bounds what a lost feed message, or a call cancelled between its commit and its
/// broadcast, can leave unseen.
async fn resync_revocations(app: Arc<App>) {
    let mut stop = app.shutdown_signal();
    let mut tick = tokio::time::interval(app.settings.revocation_resync_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        if let Err(e) = app.catch_up_revocations().await {
            tracing::debug!(error = %e, "could not re-read recent revocations");
        }
    }
}

/// Sends what this replica revoked or changed to the others, in order, without making any call
/// wait for Redis. Whatever is queued when shutdown begins is still sent (within a deadline), so a
/// logout during the drain reaches the other replicas.
async fn publish_feed(app: Arc<App>) {
    let Some(mut outbox) = app.take_outbox() else {
        return;
    };
    let mut stop = app.shutdown_signal();
    loop {
        let first = tokio::select! {
            next = outbox.recv() => next,
            () = stopped(&mut stop) => break,
        };
        let Some(mut batch) = first else { return };
        while let Ok(more) = outbox.try_recv() {
            batch.extend(more);
        }
        app.feed.publish_revocations(&batch).await;
    }
    let mut rest = Vec::new();
    while let Ok(more) = outbox.try_recv() {
        rest.extend(more);
    }
    if !rest.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), app.feed.publish_revocations(&rest)).await;
    }
}

/// Follows the Redis channel. After each (re)subscription the replica reads Postgres for what it
/// may have missed, and only then counts as synced; when the subscription is lost it is unsynced
/// (each credential is checked in Postgres) until the next round succeeds.
async fn follow_feed(app: Arc<App>) {
    let mut stop = app.shutdown_signal();
    let mut retry = FEED_RETRY_MIN;
    let mut warned = false;
    loop {
        match app.feed.subscribe().await {
            Ok(Some(pubsub)) => {
                // Subscribed first, then reloaded: nothing published in between is missed, and
                // whatever was revoked while the feed was down is in Postgres.
                match app.load_revocations().await {
                    Ok(_) => {
                        app.feed.set_synced(true);
                        if warned {
                            tracing::info!("revocation feed resumed");
                        }
                        retry = FEED_RETRY_MIN;
                        if follow(&app, pubsub, &mut stop).await {
                            app.feed.set_synced(false);
                            return;
                        }
                        app.feed.set_synced(false);
                        tracing::warn!(
                            "lost the revocation feed; checking Postgres for each credential until it is back"
                        );
                        warned = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "subscribed to the feed but cannot read Postgres"),
                }
            }
            Ok(None) => return,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot subscribe to the revocation feed; checking Postgres for each credential");
                    warned = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = stopped(&mut stop) => return,
        }
        retry = (retry * 2).min(FEED_RETRY_MAX);
    }
}

/// Reads one subscription until it breaks (returns false) or the server stops (returns true).
/// Nothing here waits on Postgres, so messages are applied as fast as they come.
async fn follow(app: &Arc<App>, pubsub: redis::aio::PubSub, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(FEED_PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return false };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                match serde_json::from_str::<FeedMessage>(&payload) {
                    Ok(message) => apply(app, message),
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed feed message"),
                }
            }
            _ = ping.tick() => {
                // (A subscribed connection answers PING with an array, not "PONG": any reply will do.)
                let alive = tokio::time::timeout(FEED_PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return false;
                }
            }
            () = stopped(stop) => return true,
        }
    }
}

fn apply(app: &Arc<App>, message: FeedMessage) {
    if message.origin() == app.feed.origin() {
        return;
    }
    match &message {
        FeedMessage::Revocation { .. } => {
            if let Some(revocation) = message.to_revocation() {
                app.absorb(&revocation);
            }
        }
        FeedMessage::KeysChanged { .. } => {
            let app = app.clone();
            tokio::spawn(async move { app.reload_keys().await });
        }
    }
}
