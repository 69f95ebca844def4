//! Background work of a running server. Every loop ends when the server begins to shut down.
//!
//! - health follows database reachability;
//! - the feed publisher sends this replica's revocations to Redis;
//! - the feed follower applies other replicas' revocations, and decides when this replica's view
//!   is synced;
//! - the resync re-reads recent revocations from Postgres, the safety net under the feed;
//! - upkeep writes API-key usage, reloads signing keys and forgets expired revocations;
//! - mail requests left over by another replica are handled; mail delivery sends the outbox,
//!   with retries;
//! - housekeeping purges accounts past their deletion grace, and expired tokens, sessions,
//!   delivered mail and revocations.

use crate::app::App;
use crate::health::{set_all, stopped};
use crate::mail::delivery::SendError;
use crate::revocation::FeedMessage;
use crate::store;
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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
        tokio::spawn(deliver_mail(app.clone())),
        tokio::spawn(handle_left_over_mail_requests(app.clone())),
        tokio::spawn(housekeeping(app.clone())),
    ];
    if app.revoker.feed().is_distributed() {
        jobs.push(tokio::spawn(publish_feed(app.clone())));
        jobs.push(tokio::spawn(follow_feed(app)));
    }
    jobs
}

async fn probe_database(app: Arc<App>, health: HealthReporter) {
    let mut stop = app.state.shutdown_signal();
    let mut serving = true;
    let mut tick = tokio::time::interval(app.settings.intervals.health_probe);
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
            if let Err(e) = app.revoker.catch_up().await {
                tracing::warn!(error = %e, "could not reload revocations");
            }
            tracing::info!("database reachable again: SERVING");
            set_all(&app.state, &health, ServingStatus::Serving).await;
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            set_all(&app.state, &health, ServingStatus::NotServing).await;
        }
    }
}

async fn upkeep(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let settings = &app.settings;
    let mut flush = tokio::time::interval(settings.intervals.usage_flush);
    let mut keys = tokio::time::interval(settings.intervals.key_refresh);
    let mut refusals = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
    flush.tick().await;
    keys.tick().await;
    refusals.tick().await;
    loop {
        tokio::select! {
            _ = refusals.tick() => app.audit_log.flush_refusals().await,
            _ = flush.tick() => {
                if let Err(e) = app.api_keys.flush_api_key_usage().await {
                    tracing::warn!(error = %e, "could not write API key usage");
                }
            }
            _ = keys.tick() => {
                rotate_when_due(&app).await;
                app.reload_keys().await;
                app.revoker.view().prune(app.clock.now());
            }
            () = stopped(&mut stop) => {
                app.audit_log.flush_refusals().await;
                return;
            }
        }
    }
}

/// The automatic rotation (`AUTHD_KEY_ROTATION_INTERVAL`), made by one replica; the others hear
/// of it through the feed, or at their next reload.
async fn rotate_when_due(app: &App) {
    let tokens = &app.settings.tokens;
    if tokens.key_rotation_interval.is_zero() {
        return;
    }
    let made = crate::tokens::keys::rotate_if_due(
        &app.pool,
        &tokens.key_encryption_key,
        tokens.signing_alg,
        app.clock.now(),
        tokens.key_publish_ahead,
        tokens.key_rotation_interval,
    )
    .await;
    match made {
        Ok(Some(kid)) => {
            tracing::info!(%kid, "rotated the signing key on schedule; it signs after the publish-ahead");
            let feed = app.revoker.feed();
            feed.publish(FeedMessage::KeysChanged {
                origin: feed.origin().to_string(),
            })
            .await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not rotate the signing key on schedule"),
    }
}

/// How often rate-limit refusals are summarised into the audit trail.
const REFUSAL_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// How long a claim on one mail holds: short, so a replica that dies mid-send leaves its mail to
/// the others within the minute. Its send may take the first 25 s of it (from before the claim),
/// recording the outcome (retried, through a database failover) the time up to 5 s before its
/// end, and the writes of a claim that ran out anyway land nowhere (`store::mail`'s fence), so
/// no two replicas send a mail at once while their clocks agree within those 5 s.
const MAIL_LEASE_SECS: u64 = 45;
const MAIL_LEASE: chrono::Duration = chrono::Duration::seconds(MAIL_LEASE_SECS as i64);
const MAIL_SEND_TIMEOUT: Duration = Duration::from_secs(25);
const MAIL_LEASE_MARGIN: Duration = Duration::from_secs(5);
const _: () = assert!(MAIL_SEND_TIMEOUT.as_secs() + 10 + MAIL_LEASE_MARGIN.as_secs() <= MAIL_LEASE_SECS);
/// Retries back off up to this, so a mail server that comes back is used within it.
const MAIL_MAX_BACKOFF_SECS: i64 = 30;
/// Mail still undelivered after this long is given up on (and its link dropped): no link in it
/// lives longer.
const MAIL_GIVE_UP: chrono::Duration = chrono::Duration::days(1);

/// Handles the mail requests a replica answered but could not handle (it stopped, or failed),
/// every `AUTHD_MAIL_POLL_INTERVAL`: apart from sending, so a slow mail server does not hold them.
async fn handle_left_over_mail_requests(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let mut tick = tokio::time::interval(app.settings.intervals.mail_poll);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        match app.accounts.handle_left_over_mail_requests().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "handled mail requests left over"),
            Err(e) => tracing::warn!(error = %e.detail(), "could not handle mail requests left over"),
        }
    }
}

/// Sends due mail from the outbox: at once when this replica wrote some, otherwise every
/// `AUTHD_MAIL_POLL_INTERVAL` (other replicas' mail, retries).
async fn deliver_mail(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let mut tick = tokio::time::interval(app.settings.intervals.mail_poll);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.mail_ready.notified() => {}
            () = stopped(&mut stop) => return,
        }
        // Drain what is due, one mail at a time; a replica shutting down claims no more.
        while !*stop.borrow() {
            match deliver_next(&app).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e.detail(), "mail delivery round failed");
                    break;
                }
            }
        }
        if let Ok(mut conn) = store::conn(&app.pool).await
            && let Ok(pending) = store::mail::pending(&mut conn, app.clock.now()).await
        {
            app.metrics.mail.outbox_depth.record(pending.max(0) as u64, &[]);
        }
    }
}

/// Claims, sends and records the oldest due mail; false when none is due.
async fn deliver_next(app: &App) -> crate::error::Result<bool> {
    // The claim's time is read before its statements run, and so is this.
    let claimed_at = tokio::time::Instant::now();
    let claimed = {
        let mut conn = store::conn(&app.pool).await?;
        store::mail::claim_next(&mut conn, app.clock.now(), MAIL_LEASE).await?
    };
    let Some(mail) = claimed else {
        return Ok(false);
    };
    let done_by = claimed_at + Duration::from_secs(MAIL_LEASE_SECS) - MAIL_LEASE_MARGIN;
    let kind = crate::mail::kind_label(&mail.kind);
    // A root span per delivery: the call that wrote the mail has long been answered.
    let span = tracing::info_span!("mail", otel.name = "mail.deliver", otel.kind = "client");
    span.set_attribute("mail.kind", kind);
    let outcome = match mail
        .sealed_message
        .as_deref()
        .and_then(|sealed| crate::mail::unseal(&app.settings.tokens.key_encryption_key, sealed))
    {
        Some(message) => tokio::time::timeout_at(
            claimed_at + MAIL_SEND_TIMEOUT,
            app.mailer.send(&app.settings.mail.from, &message, mail.id, &mail.kind),
        )
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Err(SendError::transient("timed out"))),
        // Perhaps sealed by a replica with another key (a rolling change): keep it for one that can.
        None => Err(SendError::transient(
            "the stored message cannot be opened here (another AUTHD_KEY_ENCRYPTION_KEY?)",
        )),
    };
    // Recorded while the claim holds, through a failover of a few seconds: unrecorded, a mail
    // that went out goes out again once the claim runs out.
    let mut pause = Duration::from_millis(500);
    loop {
        let error = match tokio::time::timeout_at(done_by, record_outcome(app, &mail, &outcome))
            .instrument(span.clone())
            .await
        {
            Ok(Ok(())) => break,
            Ok(Err(e)) => e.detail(),
            Err(_) => "timed out".to_string(),
        };
        if tokio::time::Instant::now() + pause >= done_by {
            tracing::warn!(id = mail.id, error = %error, "could not record a mail's delivery; it is tried again when its claim runs out");
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(4));
    }
    Ok(true)
}

/// Writes what became of a send, unless the claim on it ran out (then another replica has the
/// mail, and this writes nothing); its metrics and log line follow the write, so a retried write
/// counts once.
async fn record_outcome(
    app: &App,
    mail: &store::mail::OutboxRow,
    outcome: &Result<(), SendError>,
) -> crate::error::Result<()> {
    let now = app.clock.now();
    let kind = KeyValue::new("kind", crate::mail::kind_label(&mail.kind));
    let failed = |outcome: &'static str| {
        let span = tracing::Span::current();
        span.set_attribute("error.type", outcome);
        span.set_status(opentelemetry::trace::Status::error(outcome));
        app.metrics
            .mail
            .failures
            .add(1, &[kind.clone(), KeyValue::new("outcome", outcome)]);
    };
    let mut conn = store::conn(&app.pool).await?;
    let held = match outcome {
        Ok(()) => {
            let held = store::mail::mark_sent(&mut conn, mail, now).await?;
            if held {
                app.metrics.mail.delivered.add(1, std::slice::from_ref(&kind));
                tracing::info!(id = mail.id, kind = %mail.kind, "mail delivered");
            }
            held
        }
        Err(error) if error.permanent || now - mail.created_at > MAIL_GIVE_UP => {
            let held = store::mail::mark_abandoned(&mut conn, mail, &error.message, now).await?;
            if held {
                failed("abandoned");
                tracing::error!(id = mail.id, kind = %mail.kind, error = %error.message, "giving up on a mail");
            }
            held
        }
        Err(error) => {
            let backoff = 1i64 << mail.attempts.clamp(0, 5);
            let next = now + chrono::Duration::seconds(backoff.min(MAIL_MAX_BACKOFF_SECS));
            let held = store::mail::mark_retry(&mut conn, mail, &error.message, next).await?;
            if held {
                failed("retry");
                tracing::warn!(id = mail.id, kind = %mail.kind, attempt = mail.attempts + 1, error = %error.message, "mail not delivered; will retry");
            }
            held
        }
    };
    if !held {
        tracing::warn!(id = mail.id, kind = %mail.kind, delivered = outcome.is_ok(), "a mail's outcome not written: its claim ran out (another replica has the mail) or an earlier try of the write landed");
    }
    Ok(())
}

/// Purges, at least once a minute, by one replica at a time.
async fn housekeeping(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let mut tick = tokio::time::interval(app.settings.intervals.housekeeping);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        if let Err(e) = app.accounts.purge_deleted_accounts().await {
            tracing::warn!(error = %e.detail(), "could not purge deleted accounts");
        }
        if let Err(e) = purge_expired(&app).await {
            tracing::warn!(error = %e.detail(), "housekeeping failed");
        }
    }
}

async fn purge_expired(app: &App) -> crate::error::Result<()> {
    use diesel_async::AsyncConnection;
    const HOUSEKEEPING_LOCK: i64 = 7203;
    let now = app.clock.now();
    let day_ago = now - chrono::Duration::days(1);
    let retention = chrono::Duration::from_std(app.settings.audit.retention).unwrap_or(chrono::Duration::days(90));
    let audit_cutoff = now - retention;
    let mut conn = store::conn(&app.pool).await?;
    conn.transaction::<_, store::StoreError, _>(async |conn| {
        if !store::try_lock_for_transaction(conn, HOUSEKEEPING_LOCK).await? {
            return Ok(());
        }
        store::one_time_tokens::purge_expired(conn, day_ago).await?;
        store::sessions::purge_finished(conn, day_ago).await?;
        store::mail::purge_finished(conn, day_ago).await?;
        store::revocations::purge_expired(conn, now).await?;
        if app.settings.audit.archive_dir.is_none() {
            store::audit::purge_older(conn, audit_cutoff).await?;
        }
        Ok(())
    })
    .await?;
    if let Some(dir) = &app.settings.audit.archive_dir {
        crate::audit::export::archive_and_purge(&app.pool, dir, audit_cutoff)
            .await
            .map_err(|e| {
                crate::error::Error::internal(format!("archiving the audit trail in {}: {e:#}", dir.display()))
            })?;
    }
    Ok(())
}

/// Re-reads the revocations recorded since the last read every
/// `AUTHD_REVOCATION_RESYNC_INTERVAL`, in both modes: it bounds what a lost feed message, a call
/// cancelled between its commit and its broadcast, or a replica cut off from Redis can leave
/// unseen.
async fn resync_revocations(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let mut tick = tokio::time::interval(app.settings.intervals.revocation_resync);
    tick.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        match app.revoker.catch_up().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("re-reading recent revocations again");
            }
            Ok(_) => {}
            // Once per outage: every 250 ms would drown the log.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot re-read recent revocations; the view now follows the feed alone");
            }
            Err(_) => {}
        }
    }
}

/// Sends what this replica revoked or changed to the others, in order, without making any call
/// wait for Redis. Whatever is queued when shutdown begins is still sent (within a deadline), so a
/// logout during the drain reaches the other replicas.
async fn publish_feed(app: Arc<App>) {
    let Some(mut outbox) = app.revoker.take_outbox() else {
        return;
    };
    let mut stop = app.state.shutdown_signal();
    loop {
        let first = tokio::select! {
            next = outbox.recv() => next,
            () = stopped(&mut stop) => break,
        };
        let Some(mut batch) = first else { return };
        while let Ok(more) = outbox.try_recv() {
            batch.extend(more);
        }
        app.revoker.feed().publish_revocations(&batch).await;
    }
    let mut rest = Vec::new();
    while let Ok(more) = outbox.try_recv() {
        rest.extend(more);
    }
    if !rest.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), app.revoker.feed().publish_revocations(&rest)).await;
    }
}

/// Follows the Redis channel. After each (re)subscription the replica reads Postgres for what it
/// may have missed, and only then counts as synced; when the subscription is lost it is unsynced
/// (each credential is checked in Postgres) until the next round succeeds.
async fn follow_feed(app: Arc<App>) {
    let mut stop = app.state.shutdown_signal();
    let mut retry = FEED_RETRY_MIN;
    let mut warned = false;
    loop {
        match app.revoker.feed().subscribe().await {
            Ok(Some(pubsub)) => {
                // Subscribed first, then re-read: nothing published in between is missed, and
                // whatever was revoked while the feed was down is in Postgres.
                match app.revoker.resync().await {
                    Ok(_) => {
                        app.revoker.feed().set_synced(true);
                        if warned {
                            tracing::info!("revocation feed resumed");
                        }
                        retry = FEED_RETRY_MIN;
                        if follow(&app, pubsub, &mut stop).await {
                            app.revoker.feed().set_synced(false);
                            return;
                        }
                        app.revoker.feed().set_synced(false);
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
    if message.origin() == app.revoker.feed().origin() {
        return;
    }
    match &message {
        FeedMessage::Revocation { .. } => {
            if let Some(revocation) = message.to_revocation() {
                let lag = (app.clock.now() - revocation.created_at).to_std().unwrap_or_default();
                app.metrics.feed_lag.record(lag.as_secs_f64(), &[]);
                app.revoker.absorb(&revocation);
            }
        }
        FeedMessage::KeysChanged { .. } => {
            let app = app.clone();
            tokio::spawn(async move { app.reload_keys().await });
        }
    }
}
