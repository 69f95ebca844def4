//! What every adapter reads from a request besides its message: the caller the authentication
//! layer established ([`super::authenticate`]), and the client's address and user agent.

use crate::authn::Authenticator;
use crate::error::Error;
use crate::identity::{Caller, ClientInfo};
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

pub use crate::authn::bearer_of;

/// The bearer credential of a request's metadata; `None` when absent or malformed.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    bearer_of(metadata.get("authorization")?.to_str().ok()?)
}

/// The credential of an RPC whose credential is optional, checked only if the handler asks.
#[derive(Clone)]
pub(crate) struct Deferred {
    authenticator: Arc<Authenticator>,
    bearer: Option<Arc<str>>,
}

impl Deferred {
    pub(crate) fn new(authenticator: Arc<Authenticator>, bearer: Option<String>) -> Self {
        Self {
            authenticator,
            bearer: bearer.map(Into::into),
        }
    }
}

/// The authenticated caller. The layer has already refused the call when its policy needs a
/// caller and none was established, so a missing one here is refused too (fail closed).
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Error::Unauthenticated.into())
}

/// The caller of an RPC whose credential is optional: `None` when none was presented, the
/// refusal when one was presented and is not live.
pub async fn optional_caller<T>(request: &Request<T>) -> Result<Option<Caller>, Status> {
    let Some(deferred) = request.extensions().get::<Deferred>() else {
        return Ok(None);
    };
    match deferred.bearer.as_deref() {
        Some(bearer) => Ok(Some(deferred.authenticator.authenticate(Some(bearer)).await?)),
        None => Ok(None),
    }
}

/// Where the call came from, as the layer resolved it (through trusted proxies).
pub fn client<T>(request: &Request<T>) -> ClientInfo {
    request.extensions().get::<ClientInfo>().cloned().unwrap_or_default()
}
