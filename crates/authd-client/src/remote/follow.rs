//! The background tasks of a [`Verifier`](super::Verifier): one follows `WatchRevocations` (list,
//! then watch, resuming from its cursor), one follows `WatchKeys`. Each reopens its stream with
//! backoff when it ends, and neither ever gives up.

use super::{Shared, bump, wall_now};
use crate::keys::KeySet;
use crate::revocation::{Revocation, RevocationKind};
use authd_proto::watch_revocations_response::Event;
use authd_proto::{RevocationEvent, WatchKeysRequest, WatchRevocationsRequest};
use chrono::DateTime;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How far the first revocation stream got, for [`Verifier::connect`](super::Verifier::connect).
#[derive(Debug)]
pub(super) enum Phase {
    Starting,
    /// The first snapshot is in.
    Ready,
    /// authd refused the credential before the first snapshot.
    Refused(tonic::Status),
}

/// How often the view forgets revocations whose credentials have all expired.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Waits between attempts: 100 ms, doubling up to the maximum, with some jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF,
            max: max.max(FIRST_BACKOFF),
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    async fn wait(&mut self) {
        use rand::Rng;
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// Whether a status means the credential will not do (as opposed to authd being away).
fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// Follows `WatchRevocations` for as long as the verifier lives.
pub(super) async fn revocations(shared: Arc<Shared>, phase: watch::Sender<Phase>) {
    let mut cursor = None;
    let mut backoff = Backoff::new(shared.options.max_backoff);
    let mut first = true;
    loop {
        let (in_step, ended) = follow_revocations(&shared, &mut cursor, &phase).await;
        match &ended {
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                // A cursor this server does not take (another version): start over.
                tracing::warn!(
                    message = status.message(),
                    "authd refused the cursor; starting from a snapshot"
                );
                cursor = None;
            }
            Err(status) if is_refusal(status) => {
                tracing::error!(code = ?status.code(), message = status.message(), "authd refused the verifier's credential for WatchRevocations");
                if phase.borrow().is_starting() {
                    phase.send_replace(Phase::Refused(status.clone()));
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "the revocation stream from authd ended")
            }
            Ok(reason) => tracing::warn!(reason, "the revocation stream from authd ended"),
        }
        if in_step {
            backoff.reset();
        }
        if !first || in_step {
            bump(&shared.counters.stream_restarts);
        }
        first = false;
        backoff.wait().await;
    }
}

impl Phase {
    fn is_starting(&self) -> bool {
        matches!(self, Self::Starting)
    }
}

/// One `WatchRevocations` stream, until it ends. Returns whether it got in step (a snapshot or a
/// resumption completed), and why it ended.
async fn follow_revocations(
    shared: &Shared,
    cursor: &mut Option<String>,
    phase: &watch::Sender<Phase>,
) -> (bool, Result<&'static str, tonic::Status>) {
    let options = &shared.options;
    let request = shared.request(WatchRevocationsRequest {
        since: cursor.clone().unwrap_or_default(),
        heartbeat_interval: prost_types::Duration::try_from(options.heartbeat_interval).ok(),
    });
    let mut stream = match shared.client.clone().watch_revocations(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (false, Err(status)),
    };
    // A stream silent for three heartbeats is as good as gone (a partition shows no error).
    let silence = (options.heartbeat_interval * 3).max(Duration::from_millis(300));
    let mut in_step = false;
    let mut ever_in_step = false;
    let mut behind = false;
    // An event this verifier cannot apply (a newer server): its view is not complete.
    let mut incomplete = false;
    let mut pruned = tokio::time::Instant::now();
    // Before this stream's marker the view stands as it was (a reconnect within max_staleness
    // costs nothing); what authd says is wrong with it counts at once.
    let confirm = |in_step: bool, behind: bool, incomplete: bool| {
        if behind || incomplete {
            shared.view_confirmed.clear();
        } else if in_step {
            shared.view_confirmed.set(shared.started);
        }
    };
    loop {
        let message = match tokio::time::timeout(silence, stream.message()).await {
            Err(_) => return (ever_in_step, Ok("authd fell silent")),
            Ok(Err(status)) => return (ever_in_step, Err(status)),
            Ok(Ok(None)) => return (ever_in_step, Ok("authd closed the stream")),
            Ok(Ok(Some(message))) => message,
        };
        match message.event {
            Some(Event::Revocation(event)) => {
                if !absorb(shared, &event) && !incomplete {
                    incomplete = true;
                    tracing::warn!(
                        kind = event.kind,
                        "a revocation this verifier cannot apply; verifying through Introspect"
                    );
                }
                // While the view misses something, no cursor: the next stream starts from a
                // full snapshot, which says afresh whether the view can be complete.
                if incomplete {
                    *cursor = None;
                } else if !event.cursor.is_empty() {
                    *cursor = Some(event.cursor);
                }
                confirm(in_step, behind, incomplete);
            }
            Some(Event::SnapshotComplete(marker)) => {
                *cursor = (!incomplete).then_some(marker.cursor);
                shared.view.prune(wall_now());
                if !marker.resumed {
                    // A full snapshot leaves out new API-key secrets: forget the answers.
                    shared.answers.clear();
                }
                in_step = true;
                ever_in_step = true;
                note_behind(&mut behind, marker.behind);
                confirm(in_step, behind, incomplete);
                tracing::info!(
                    revocations = shared.view.len(),
                    resumed = marker.resumed,
                    "the revocation view is in step with authd"
                );
                if phase.borrow().is_starting() {
                    phase.send_replace(Phase::Ready);
                }
            }
            Some(Event::Heartbeat(heartbeat)) => {
                note_behind(&mut behind, heartbeat.behind);
                confirm(in_step, behind, incomplete);
                if pruned.elapsed() >= PRUNE_EVERY {
                    shared.view.prune(wall_now());
                    pruned = tokio::time::Instant::now();
                }
            }
            Some(Event::Resync(resync)) => {
                // Events were missed: not current until the snapshot that follows is in. The
                // revocations held stay true until they expire.
                in_step = false;
                incomplete = false;
                shared.view_confirmed.clear();
                shared.answers.clear();
                tracing::info!(reason = resync.reason, "authd resynchronises the revocation view");
            }
            None => {}
        }
    }
}

/// Follows the server's word on whether its own view is current, and logs each change.
fn note_behind(behind: &mut bool, now: bool) {
    if now != *behind {
        *behind = now;
        if now {
            tracing::warn!("authd cannot prove its own revocation view current; verifying through Introspect");
        } else {
            tracing::info!("authd's revocation view is current again");
        }
    }
}

/// Applies one event to the view (or, for a new API-key secret, to the answer cache); false for
/// an event of a kind this verifier does not know.
fn absorb(shared: &Shared, event: &RevocationEvent) -> bool {
    use authd_proto::RevocationKind as Kind;
    let kind = match event.kind() {
        Kind::Session => RevocationKind::Session,
        Kind::User => RevocationKind::User,
        Kind::ApiKey => RevocationKind::ApiKey,
        Kind::Token => RevocationKind::Token,
        Kind::ApiKeyRotated => {
            shared.answers.forget_id(&event.subject_id);
            return true;
        }
        Kind::Unspecified => return false,
    };
    let timestamp = |ts: Option<&prost_types::Timestamp>| {
        ts.and_then(|ts| DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0)))
    };
    let Some(until) = timestamp(event.until.as_ref()) else {
        tracing::warn!("a revocation event without `until`");
        return false;
    };
    // A server that does not send `expires_at` keeps a user-wide entry for a token's lifetime.
    let lifetime = chrono::Duration::from_std(shared.rules.max_lifetime).unwrap_or(chrono::Duration::hours(1))
        + chrono::Duration::seconds(crate::verify::LEEWAY_SECS + 60);
    let expires_at = timestamp(event.expires_at.as_ref()).unwrap_or(match kind {
        RevocationKind::User => until + lifetime,
        _ => until,
    });
    let revocation = Revocation {
        kind,
        subject_id: event.subject_id.clone(),
        user_id: uuid::Uuid::parse_str(&event.user_id).ok(),
        // Only a user-wide revocation's instant matters (it covers what was issued before it).
        created_at: if kind == RevocationKind::User {
            until
        } else {
            expires_at
        },
        expires_at,
    };
    shared.view.apply(&revocation);
    if kind == RevocationKind::ApiKey {
        shared.answers.forget_id(&event.subject_id);
    }
    true
}

/// Follows `WatchKeys` for as long as the verifier lives.
pub(super) async fn keys(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.options.max_backoff);
    loop {
        let delivered = follow_keys(&shared).await;
        shared.keys_confirmed.clear();
        if delivered {
            backoff.reset();
        }
        bump(&shared.counters.stream_restarts);
        backoff.wait().await;
    }
}

/// One `WatchKeys` stream, until it ends or falls silent; returns whether it delivered a key set.
async fn follow_keys(shared: &Shared) -> bool {
    let options = &shared.options;
    let request = shared.request(WatchKeysRequest {
        heartbeat_interval: prost_types::Duration::try_from(options.heartbeat_interval).ok(),
    });
    let mut stream = match shared.client.clone().watch_keys(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "WatchKeys refused");
            return false;
        }
    };
    let silence = options.heartbeat_interval * 3;
    let mut delivered = false;
    // The key set last received, and whether this verifier refused it.
    let mut last: Option<(String, bool)> = None;
    loop {
        let message = match tokio::time::timeout(silence, stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return delivered,
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "the key stream from authd ended");
                return delivered;
            }
            Err(_) => {
                tracing::warn!("the key stream from authd fell silent");
                return delivered;
            }
        };
        let refused = match &last {
            Some((json, refused)) if *json == message.jwks_json => *refused,
            _ => {
                let refused = match KeySet::from_jwks_json(&message.jwks_json) {
                    Ok(keys) => {
                        tracing::info!(keys = keys.len(), "authd's signing keys");
                        *shared.keys.write().expect("key set lock") = Arc::new(keys);
                        delivered = true;
                        false
                    }
                    // The keys held stay, but are no longer confirmed: tokens go to Introspect.
                    Err(e) => {
                        tracing::warn!(error = %e, "authd sent a key set this verifier refuses");
                        true
                    }
                };
                last = Some((message.jwks_json, refused));
                refused
            }
        };
        if refused {
            shared.keys_confirmed.clear();
        } else {
            shared.keys_confirmed.set(shared.started);
        }
    }
}
