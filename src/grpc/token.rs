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

fn revocation_event(revocation: &Revocation) -> RevocationEvent {
    let kind = match revocation.kind {
        RevocationKind::Session => crate::proto::RevocationKind::Session,
        RevocationKind::User => crate::proto::RevocationKind::User,
        RevocationKind::ApiKey => crate::proto::RevocationKind::ApiKey,
        RevocationKind::Token => crate::proto::RevocationKind::Token,
        // Never sent to watchers (the revoker does not tell them).
        RevocationKind::SecretRotated => crate::proto::RevocationKind::Unspecified,
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
        Ok(Response::new(GetJwksResponse { keys, jwks_json }))
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
        // Subscribed before answering: every revocation applied from now on is delivered.
        let mut events = self.inner.revoker.feed().watch();
        let app = self.inner.clone();
        let credential = bearer(request.metadata()).unwrap_or_default().to_string();
        Ok(Response::new(stream_from(app.state.clone(), move |tx| async move {
            let mut heartbeat = tokio::time::interval(app.heartbeat);
            loop {
                let event = tokio::select! {
                    event = events.recv() => match event {
                        Ok(revocation) => watch_revocations_response::Event::Revocation(revocation_event(&revocation)),
                        Err(broadcast::error::RecvError::Lagged(missed)) => watch_revocations_response::Event::Resync(Resync {
                            reason: format!("fell {missed} events behind; rebuild your view (e.g. from Introspect or after a restart)"),
                        }),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = heartbeat.tick() => {
                        if let Err(status) = still_authorised(&app.authenticator, &credential).await {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                        watch_revocations_response::Event::Heartbeat(Heartbeat {
                            at: Some(convert::timestamp(app.clock.now())),
                        })
                    }
                };
                if tx
                    .send(Ok(WatchRevocationsResponse { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })))
    }

    async fn watch_keys(&self, request: Request<WatchKeysRequest>) -> Reply<Self::WatchKeysStream> {
        caller(&request)?.require_scope(crate::domain::Scope::INTROSPECT)?;
        let mut version = self.inner.keys.watch();
        version.borrow_and_update();
        let app = self.inner.clone();
        let credential = bearer(request.metadata()).unwrap_or_default().to_string();
        Ok(Response::new(stream_from(app.state.clone(), move |tx| async move {
            let mut heartbeat = tokio::time::interval(app.heartbeat);
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
