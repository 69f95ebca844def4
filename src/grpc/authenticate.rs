//! The one home of authentication for authd's own RPCs: a tower layer around every gRPC service,
//! inside [`super::observe`]'s span. It resolves where the call came from, looks the RPC up in
//! [`ACCESS`], authenticates the bearer credential the policy asks for, and either refuses the
//! call before any handler runs or hands the handler its [`Caller`] in the request's extensions
//! (read with [`super::request::caller`]). For an RPC whose credential is optional the check is
//! deferred to the moment the handler needs it ([`super::request::optional_caller`]), so that
//! such an unauthenticated call meets its length bounds before anything else.

use super::request::{Deferred, bearer_of};
use crate::authn::Authenticator;
use crate::error::Error;
use crate::identity::{Caller, ClientInfo};
use crate::net::Cidr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

/// What an RPC asks of its caller's credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential: the call proves itself otherwise (a password, a mailed token) or is public.
    Public,
    /// A credential is checked if the handler needs it and one was presented.
    Optional,
    /// Any live credential: a user's access token or an API key.
    Caller,
    /// A user's own access token (managing the account); API keys are refused.
    UserSession,
}

use Access::{Caller as AnyCaller, Optional, Public, UserSession};

/// Every RPC of authd's own services and what it asks. An `auth.v1` method missing here is
/// refused as unimplemented before any handler runs (fail closed), and a test checks the table
/// is complete.
pub const ACCESS: &[(&str, Access)] = &[
    ("auth.v1.AuthService/Register", Public),
    ("auth.v1.AuthService/Login", Public),
    ("auth.v1.AuthService/Refresh", Public),
    ("auth.v1.AuthService/Logout", Optional),
    ("auth.v1.AuthService/ChangePassword", UserSession),
    ("auth.v1.AuthService/RequestPasswordReset", Public),
    ("auth.v1.AuthService/ResetPassword", Public),
    ("auth.v1.AuthService/SendVerificationEmail", Public),
    ("auth.v1.AuthService/VerifyEmail", Public),
    ("auth.v1.AuthService/RequestAccountDeletion", Public),
    ("auth.v1.AuthService/ConfirmAccountDeletion", Public),
    ("auth.v1.AuthService/CancelAccountDeletion", Optional),
    ("auth.v1.AuthService/GetAccountDeletionStatus", UserSession),
    ("auth.v1.AuthService/ListProviders", Public),
    ("auth.v1.AuthService/LoginWithProvider", Public),
    ("auth.v1.AuthService/LinkProvider", UserSession),
    ("auth.v1.AuthService/UnlinkProvider", UserSession),
    ("auth.v1.UserService/GetMe", AnyCaller),
    ("auth.v1.UserService/UpdateMe", UserSession),
    ("auth.v1.UserService/ListUsers", UserSession),
    ("auth.v1.UserService/GetUser", UserSession),
    ("auth.v1.UserService/UpdateUser", UserSession),
    ("auth.v1.UserService/LockUser", UserSession),
    ("auth.v1.UserService/UnlockUser", UserSession),
    ("auth.v1.UserService/DeleteUser", UserSession),
    ("auth.v1.SessionService/ListSessions", UserSession),
    ("auth.v1.SessionService/RevokeSession", UserSession),
    ("auth.v1.SessionService/RevokeAllSessions", UserSession),
    ("auth.v1.ApiKeyService/CreateApiKey", UserSession),
    ("auth.v1.ApiKeyService/ListApiKeys", UserSession),
    ("auth.v1.ApiKeyService/RevokeApiKey", UserSession),
    ("auth.v1.ApiKeyService/RotateApiKey", UserSession),
    ("auth.v1.TokenService/GetJwks", Public),
    ("auth.v1.TokenService/Introspect", AnyCaller),
    ("auth.v1.TokenService/Revoke", AnyCaller),
    ("auth.v1.TokenService/WatchRevocations", AnyCaller),
    ("auth.v1.TokenService/WatchKeys", AnyCaller),
    ("auth.v1.AuditService/ListAuditEvents", UserSession),
    // The gateway's credential; Check refuses (never errs) when it is missing or not allowed.
    ("envoy.service.auth.v3.Authorization/Check", Optional),
];

/// How the layer treats a call to `method` (`package.Service/Method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// One of authd's RPCs, with what it asks.
    Rpc(Access),
    /// Not authd's own (health, reflection): no credential needed.
    Other,
    /// An `auth.v1` method the table does not name.
    Unknown,
}

pub fn route(method: &str) -> Route {
    if let Some((_, access)) = ACCESS.iter().find(|(name, _)| *name == method) {
        return Route::Rpc(*access);
    }
    if method.starts_with("auth.v1.") || method.starts_with("envoy.service.auth.v3.") {
        Route::Unknown
    } else {
        Route::Other
    }
}

/// Wraps every gRPC service in [`Authenticate`].
#[derive(Clone)]
pub struct AuthenticateLayer {
    authenticator: Arc<Authenticator>,
    trusted_proxies: Arc<[Cidr]>,
}

impl AuthenticateLayer {
    pub fn new(authenticator: Arc<Authenticator>, trusted_proxies: &[Cidr]) -> Self {
        Self {
            authenticator,
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// The caller's address (through trusted proxies, see [`crate::net::client_address`]) and
    /// user agent.
    fn client_info(&self, headers: &http::HeaderMap, peer: Option<std::net::IpAddr>) -> ClientInfo {
        crate::net::client_info(peer, headers, &self.trusted_proxies)
    }

    /// The caller a required policy asks for, or the refusal.
    async fn authenticate(&self, access: Access, bearer: Option<&str>) -> Result<Caller, Error> {
        match access {
            UserSession => self.authenticator.authenticate_user(bearer).await,
            Public | Optional | AnyCaller => self.authenticator.authenticate(bearer).await,
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthenticateLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Authenticate<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let method = request.uri().path().trim_start_matches('/').to_string();
        Box::pin(async move {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip());
            let client = layer.client_info(request.headers(), peer);
            if let Some(address) = &client.ip_address {
                // On the call's server span (attached while the call runs, see `observe`).
                crate::telemetry::spans::set_call_attribute(opentelemetry::KeyValue::new(
                    "client.address",
                    address.clone(),
                ));
            }
            request.extensions_mut().insert(client);
            let access = match route(&method) {
                Route::Rpc(access) => access,
                Route::Other => return inner.call(request).await,
                Route::Unknown => return Ok(Status::unimplemented("unknown method").into_http()),
            };
            let bearer = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_of)
                .map(str::to_string);
            match access {
                Public => {}
                Optional => {
                    let deferred = Deferred::new(layer.authenticator.clone(), bearer);
                    request.extensions_mut().insert(deferred);
                }
                AnyCaller | UserSession => match layer.authenticate(access, bearer.as_deref()).await {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                    }
                    Err(error) => return Ok(Status::from(error).into_http()),
                },
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of authd's own services has an explicit entry, and every entry names one.
    #[test]
    fn the_access_table_names_every_rpc() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        assert!(methods.len() >= 30, "the descriptor set lists authd's RPCs");
        for method in &methods {
            assert!(
                ACCESS.iter().any(|(name, _)| name == method),
                "{method} has no entry in grpc::authenticate::ACCESS"
            );
        }
        for (name, _) in ACCESS {
            assert!(methods.contains(&name.to_string()), "{name} is not an RPC");
        }
        assert_eq!(route("auth.v1.AuthService/Login"), Route::Rpc(Public));
        assert_eq!(route("auth.v1.NewService/Unknown"), Route::Unknown);
        assert_eq!(route("grpc.health.v1.Health/Check"), Route::Other);
    }
}
