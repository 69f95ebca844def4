use super::bounds;
use super::convert;
use super::request::{bearer, caller, client};
use crate::authn::{ActiveCredential, Authenticator};
use crate::clock::Clock;
use crate::error::Error;
use crate::health::ServerState;
use crate::proto::token_service_server::TokenService;
use crate::proto::*;
use crate::ratelimit::Limits;
use crate::revocation::watchers::{Cursor, LIVE_BUFFER, Start, cursor as cursor_at};
use crate::revocation::{Revocation, RevocationKind, Revoker};
use crate::tokens::SigningKeys;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// `auth.v1.TokenService`.
pub struct TokenApi {
    inner: Arc<TokenDeps>,
}

/// What the token RPCs and their streams use.
pub struct TokenDeps {
    pub authenticator: Arc<Authenticator>,
    pub revoker: Arc<Revoker>,
    pub keys: SigningKeys,
    pub limits: Arc<Limits>,
    pub clock: Clock,
    pub state: Arc<ServerState>,
    /// How often the watch streams send a heartbeat (and re-check their credential).
    pub heartbeat: std::time::Duration,
    /// Revocation snapshots being sent at once (each holds a copy of the view).
    pub snapshots: tokio::sync::Semaphore,
}

impl TokenApi {
    pub fn new(inner: TokenDeps) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

type Reply<T> = Result<Response<T>, Status>;
type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) fn jwks_message(keys: &SigningKeys) -> (Vec<Jwk>, String) {
    let ring = keys.current();
    let member =
        |jwk: &serde_json::Value, name: &str| jwk.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let keys = ring
        .jwks
        .iter()
        .map(|jwk| Jwk {
            kty: member(jwk, "kty"),
            kid: member(jwk, "kid"),
            r#use: member(jwk, "use"),
            alg: member(jwk, "alg"),
            crv: member(jwk, "crv"),
            x: member(jwk, "x"),
            y: member(jwk, "y"),
            n: member(jwk, "n"),
            e: member(jwk, "e"),
        })
        .collect();
    (keys, ring.jwks_json.clone())
}

/// A server stream fed by `produce`, which ends when the client goes away, when the producer
/// returns, or when the server begins to shut down (so streams never hold up a graceful stop).
fn stream_from<T, F, Fut>(state: Arc<ServerState>, produce: F) -> ReplyStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let closed = tx.clone();
    let work = produce(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = closed.closed() => {}
            () = state.shutting_down() => {}
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Re-checks a stream's credential: a revoked or expired one ends the stream. A store that is
/// briefly unreachable does not.
async fn still_authorised(authenticator: &Authenticator, credential: &str) -> Result<(), Status> {
    match authenticator.authenticate(Some(credential)).await {
        Ok(caller) => caller
            .require_scope(crate::domain::Scope::INTROSPECT)
            .map_err(Status::from),
        Err(Error::Unavailable) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn revocation_event(revocation: &Revocation, cursor: String) -> RevocationEvent {
    let kind = match revocation.kind {
        RevocationKind::Session => crate::proto::RevocationKind::Session,
        RevocationKind::User => crate::proto::RevocationKind::User,
        RevocationKind::ApiKey => crate::proto::RevocationKind::ApiKey,
        RevocationKind::Token => crate::proto::RevocationKind::Token,
        RevocationKind::SecretRotated => crate::proto::RevocationKind::ApiKeyRotated,
    };
    let until = match revocation.kind {
        RevocationKind::User => revocation.created_at,
        _ => revocation.expires_at,
    };
    RevocationEvent {
        kind: kind.into(),
        subject_id: revocation.subject_id.clone(),
        user_id: revocation.user_id.map(|id| id.to_string()).unwrap_or_default(),
        until: Some(convert::timestamp(until)),
        cursor,
        expires_at: Some(convert::timestamp(revocation.expires_at)),
    }
}

/// The shortest heartbeat interval a watcher may ask for.
const MIN_HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(100);

/// The heartbeat interval of a watch stream: what the watcher asked for, within the server's.
fn heartbeat_interval(asked: Option<&prost_types::Duration>, server: std::time::Duration) -> std::time::Duration {
    asked
        .and_then(convert::from_duration)
        .filter(|d| !d.is_zero())
        .map_or(server, |d| d.clamp(MIN_HEARTBEAT, server.max(MIN_HEARTBEAT)))
}

/// Sends one event of a watch stream; false when the watcher is gone.
async fn send_event(
    tx: &mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
    event: watch_revocations_response::Event,
) -> bool {
    tx.send(Ok(WatchRevocationsResponse { event: Some(event) }))
        .await
        .is_ok()
}

/// How long one snapshot (or long catch-up) may take to send. A watcher that reads slower is
/// dropped (it reconnects), so that it cannot hold one of the few snapshot slots forever.
const SNAPSHOT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends a snapshot's events; false when the watcher is gone or too slow.
async fn send_within_deadline(
    tx: &mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
    events: impl Iterator<Item = RevocationEvent>,
) -> bool {
    let send = async {
        for event in events {
            if !send_event(tx, watch_revocations_response::Event::Revocation(event)).await {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(SNAPSHOT_DEADLINE, send).await.unwrap_or(false)
}

/// Waits for a snapshot slot, with heartbeats meanwhile so the watcher knows the stream is alive;
/// `None` when the watcher is gone.
async fn wait_for_slot<'a>(
    app: &'a TokenDeps,
    tx: &mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
    every: std::time::Duration,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            permit = app.snapshots.acquire() => return permit.ok(),
            _ = heartbeat.tick() => {
                let beat = watch_revocations_response::Event::Heartbeat(Heartbeat {
                    at: Some(convert::timestamp(app.clock.now())),
                    behind: !app.revoker.feed().is_synced(),
                });
                if !send_event(tx, beat).await {
                    return None;
                }
            }
        }
    }
}

/// One `WatchRevocations` stream, list then watch: the snapshot (or the events missed since the
/// watcher's cursor), the marker, then live events and heartbeats. A watcher that falls behind
/// gets `Resync` and a fresh snapshot.
async fn follow_revocations(
    app: Arc<TokenDeps>,
    tx: mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
    mut since: Option<String>,
    credential: String,
    every: std::time::Duration,
) {
    use watch_revocations_response::Event;
    let watchers = app.revoker.watchers();
    let epoch = watchers.epoch().to_string();
    let mut lagged = false;
    loop {
        let cursor = since.take();
        let parsed = cursor.as_deref().and_then(Cursor::parse);
        let (subscription, resumable) = watchers.subscribe(parsed.as_ref());
        let mut events = subscription.events;
        if !resumable {
            let reason = if lagged {
                "the watcher fell behind further than this replica's history"
            } else {
                "the cursor is from another replica or older than what it holds"
            };
            if !send_event(&tx, Event::Resync(Resync { reason: reason.into() })).await {
                return;
            }
        }
        let (position, resumed, sent) = match subscription.start {
            Start::Resume(missed) => {
                let position = missed
                    .last()
                    .map_or(parsed.map_or(0, |c| c.position), |event| event.position + 1);
                // A long catch-up takes a slot like a snapshot: it holds a copy of the events.
                let _permit = match missed.len() > LIVE_BUFFER {
                    true => match wait_for_slot(&app, &tx, every).await {
                        Some(permit) => Some(permit),
                        None => return,
                    },
                    false => None,
                };
                let events = missed
                    .iter()
                    .map(|event| revocation_event(&event.revocation, event.cursor(&epoch)));
                if !send_within_deadline(&tx, events).await {
                    return;
                }
                (position, true, missed.len())
            }
            Start::Snapshot { position } => {
                let Some(_permit) = wait_for_slot(&app, &tx, every).await else {
                    return;
                };
                let snapshot = app.revoker.view().snapshot(app.clock.now());
                let events = snapshot.iter().map(|r| revocation_event(&r, String::new()));
                if !send_within_deadline(&tx, events).await {
                    return;
                }
                (position, false, snapshot.len())
            }
        };
        let marker = SnapshotComplete {
            cursor: cursor_at(&epoch, position),
            resumed,
            revocations: u32::try_from(sent).unwrap_or(u32::MAX),
            // As of now, after the snapshot: the watcher trusts its view from here.
            behind: !app.revoker.feed().is_synced(),
        };
        if !send_event(&tx, Event::SnapshotComplete(marker)).await {
            return;
        }
        let mut heartbeat = tokio::time::interval(every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut next = position;
        loop {
            let event = tokio::select! {
                // Events first: a heartbeat says that nothing received before it is pending.
                biased;
                event = events.recv() => match event {
                    // Replayed events may come again live: each is sent once.
                    Ok(event) if event.position < next => continue,
                    Ok(event) => {
                        next = event.position + 1;
                        Event::Revocation(revocation_event(&event.revocation, event.cursor(&epoch)))
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Catch up from the history where it can, else start over.
                        since = Some(cursor_at(&epoch, next));
                        lagged = true;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = heartbeat.tick() => {
                    if let Err(status) = still_authorised(&app.authenticator, &credential).await {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Event::Heartbeat(Heartbeat {
                        at: Some(convert::timestamp(app.clock.now())),
                        behind: !app.revoker.feed().is_synced(),
                    })
                }
            };
            if !send_event(&tx, event).await {
                return;
            }
        }
    }
}

/// RFC 7662 answer for a live credential; the inactive answer is the default message.
pub fn introspection(credential: ActiveCredential) -> IntrospectResponse {
    match credential {
        ActiveCredential::AccessToken(claims) => {
            let claims = Arc::unwrap_or_clone(claims);
            IntrospectResponse {
                active: true,
                token_type: "access_token".into(),
                sub: claims.sub,
                username: claims.username,
                scope: claims.scope,
                aud: claims.aud,
                iss: claims.iss,
                client_id: claims.client_id,
                jti: claims.jti,
                sid: claims.sid,
                roles: claims.roles,
                exp: claims.exp,
                iat: claims.iat,
                nbf: claims.nbf,
            }
        }
        ActiveCredential::ApiKey(key) => IntrospectResponse {
            active: true,
            token_type: "api_key".into(),
            sub: key.user_id.to_string(),
            username: key.username,
            scope: key.scopes.join(" "),
            client_id: key.prefix,
            jti: key.id.to_string(),
            // A key holds its scopes and nothing more: a gateway authorising by role must not
            // see its owner's roles on it.
            roles: Vec::new(),
            exp: key.expires_at.map(|t| t.timestamp()).unwrap_or(0),
            iat: key.created_at.timestamp(),
            nbf: key.created_at.timestamp(),
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    type WatchRevocationsStream = ReplyStream<WatchRevocationsResponse>;
    type WatchKeysStream = ReplyStream<WatchKeysResponse>;

    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Reply<GetJwksResponse> {
        let (keys, jwks_json) = jwks_message(&self.inner.keys);
        let rules = self.inner.authenticator.rules();
        Ok(Response::new(GetJwksResponse {
            keys,
            jwks_json,
            issuer: rules.issuer.clone(),
            audience: rules.audience.clone(),
            max_token_lifetime: prost_types::Duration::try_from(rules.max_lifetime).ok(),
        }))
    }

    async fn introspect(&self, request: Request<IntrospectRequest>) -> Reply<IntrospectResponse> {
        if !caller(&request)?.can_introspect() {
            return Err(Error::denied("scope tokens:introspect required").into());
        }
        let token = request.get_ref().token.trim();
        // RFC 7662: anything that is not a live credential is inactive, an oversized one too
        // (and it costs no work).
        if token.len() > bounds::CREDENTIAL {
            return Ok(Response::new(IntrospectResponse::default()));
        }
        let answer = match self.inner.authenticator.validate_credential(token).await? {
            Some(credential) => introspection(credential),
            None => IntrospectResponse::default(),
        };
        Ok(Response::new(answer))
    }

    async fn revoke(&self, request: Request<RevokeRequest>) -> Reply<RevokeResponse> {
        let caller = caller(&request)?;
        // RFC 7009: OK for anything authd did not issue, which an oversized token cannot be.
        if request.get_ref().token.len() > bounds::CREDENTIAL {
            return Ok(Response::new(RevokeResponse {}));
        }
        let client = client(&request);
        self.inner
            .limits
            .enforce_for(
                crate::ratelimit::REVOKE_PER_CALLER,
                &caller.user_id.to_string(),
                Some(caller.user_id),
                &client,
            )
            .await?;
        self.inner
            .authenticator
            .revoke_token(caller, request.get_ref().token.trim())
            .await?;
        Ok(Response::new(RevokeResponse {}))
    }

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Reply<Self::WatchRevocationsStream> {
        caller(&request)?.require_scope(crate::domain::Scope::INTROSPECT)?;
        let since = Some(request.get_ref().since.trim()).filter(|s| !s.is_empty());
        if since.is_some_and(|s| Cursor::parse(s).is_none()) {
            return Err(Error::invalid("since", "not a cursor of this service").into());
        }
        let since = since.map(str::to_string);
        let every = heartbeat_interval(request.get_ref().heartbeat_interval.as_ref(), self.inner.heartbeat);
        let app = self.inner.clone();
        let credential = bearer(request.metadata()).unwrap_or_default().to_string();
        Ok(Response::new(stream_from(app.state.clone(), move |tx| {
            follow_revocations(app, tx, since, credential, every)
        })))
    }

    async fn watch_keys(&self, request: Request<WatchKeysRequest>) -> Reply<Self::WatchKeysStream> {
        caller(&request)?.require_scope(crate::domain::Scope::INTROSPECT)?;
        let mut version = self.inner.keys.watch();
        version.borrow_and_update();
        let every = heartbeat_interval(request.get_ref().heartbeat_interval.as_ref(), self.inner.heartbeat);
        let app = self.inner.clone();
        let credential = bearer(request.metadata()).unwrap_or_default().to_string();
        Ok(Response::new(stream_from(app.state.clone(), move |tx| async move {
            let mut heartbeat = tokio::time::interval(every);
            heartbeat.tick().await;
            let mut is_heartbeat = false;
            loop {
                let (keys, jwks_json) = jwks_message(&app.keys);
                let message = WatchKeysResponse {
                    keys,
                    jwks_json,
                    heartbeat: is_heartbeat,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                is_heartbeat = tokio::select! {
                    changed = version.changed() => match changed {
                        Ok(()) => false,
                        Err(_) => return,
                    },
                    _ = heartbeat.tick() => true,
                };
                if is_heartbeat && let Err(status) = still_authorised(&app.authenticator, &credential).await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        })))
    }
}
