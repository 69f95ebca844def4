//! A tower layer that authenticates every request of a tonic server or an axum/hyper HTTP
//! service with a [`Verifier`]: it reads `authorization: Bearer …`, verifies it, and puts the
//! [`Identity`] into the request's extensions. Otherwise it answers itself, in the protocol of the
//! request: gRPC `UNAUTHENTICATED` / `PERMISSION_DENIED` / `UNAVAILABLE` for a gRPC call, and HTTP
//! 401 / 403 / 503 (with `WWW-Authenticate`, RFC 6750) for anything else.
//!
//! ```no_run
//! # async fn example(verifier: authd_client::Verifier) {
//! use authd_client::AuthLayer;
//! let layer = AuthLayer::new(verifier)
//!     .require_scope("orders:read")
//!     .require_scope_for("/shop.v1.Orders/Cancel", "orders:write");
//! // tonic: Server::builder().layer(layer).add_service(…)
//! // axum:  Router::new().route(…).layer(layer)
//! # }
//! ```

use crate::identity::Identity;
use crate::remote::Verifier;
use crate::verify::Rejection;
use http::{HeaderValue, Request, Response, StatusCode, header};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Scopes a request must hold: some for every request, some for one path.
#[derive(Clone, Debug, Default)]
struct Scopes {
    everywhere: Vec<String>,
    by_path: HashMap<String, Vec<String>>,
}

impl Scopes {
    /// The first required scope the identity lacks, if any.
    fn missing<'a>(&'a self, path: &str, identity: &Identity) -> Option<&'a str> {
        self.everywhere
            .iter()
            .chain(self.by_path.get(path).into_iter().flatten())
            .find(|scope| !identity.has_scope(scope))
            .map(String::as_str)
    }
}

/// The layer; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Verifier,
    scopes: Arc<Scopes>,
}

impl AuthLayer {
    /// Authenticates every request with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            scopes: Arc::default(),
        }
    }

    /// Every request must also hold `scope`.
    pub fn require_scope(mut self, scope: &str) -> Self {
        Arc::make_mut(&mut self.scopes).everywhere.push(scope.to_string());
        self
    }

    /// Requests for exactly `path` (a gRPC method such as `/shop.v1.Orders/Cancel`, or an HTTP
    /// path) must also hold `scope`. The path is the request's as the layer sees it: inside a
    /// nested axum router that is the path below the nesting prefix, so put the layer where the
    /// paths you name are whole (or on the nested router, with its own paths).
    pub fn require_scope_for(mut self, path: &str, scope: &str) -> Self {
        Arc::make_mut(&mut self.scopes)
            .by_path
            .entry(path.to_string())
            .or_default()
            .push(scope.to_string());
        self
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: Verifier,
    scopes: Arc<Scopes>,
}

/// Why the layer answered a request itself.
enum Refusal<'a> {
    /// No bearer credential at all.
    Missing,
    /// A credential that is not valid and live.
    Unauthenticated,
    MissingScope(&'a str),
    Unavailable,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for AuthService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let scopes = self.scopes.clone();
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let presented = request.headers().contains_key(header::AUTHORIZATION);
            let Some(credential) = bearer(&request) else {
                let refusal = if presented {
                    Refusal::Unauthenticated
                } else {
                    Refusal::Missing
                };
                return Ok(refuse(grpc, refusal));
            };
            let identity = match verifier.verify(&credential).await {
                Ok(identity) => identity,
                Err(Rejection::Unavailable) => return Ok(refuse(grpc, Refusal::Unavailable)),
                Err(_) => return Ok(refuse(grpc, Refusal::Unauthenticated)),
            };
            if let Some(scope) = scopes.missing(request.uri().path(), &identity) {
                return Ok(refuse(grpc, Refusal::MissingScope(scope)));
            }
            request.extensions_mut().insert(identity);
            inner.call(request).await
        })
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The credential of `authorization: Bearer …` (the scheme in any case).
fn bearer<B>(request: &Request<B>) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then(|| credential.to_string())
}

/// The layer's own answer: a trailers-only gRPC status, or an HTTP error with RFC 6750's header.
fn refuse<B: Default>(grpc: bool, refusal: Refusal<'_>) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    if grpc {
        let (code, message) = match refusal {
            Refusal::Missing | Refusal::Unauthenticated => ("16", "a valid credential is required".to_string()),
            Refusal::MissingScope(scope) => ("7", format!("scope {scope} required")),
            Refusal::Unavailable => ("14", "authd cannot be reached to verify the credential".to_string()),
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(code));
        if let Ok(message) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", message);
        }
        return response;
    }
    // As authd's own forward-auth answers (RFC 6750: no error code when no token was presented).
    let (status, challenge) = match refusal {
        Refusal::Missing => (StatusCode::UNAUTHORIZED, r#"Bearer realm="authd""#.to_string()),
        Refusal::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="authd", error="invalid_token""#.to_string(),
        ),
        Refusal::MissingScope(scope) => (
            StatusCode::FORBIDDEN,
            format!(r#"Bearer realm="authd", error="insufficient_scope", scope="{scope}""#),
        ),
        Refusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(challenge) = HeaderValue::from_str(&challenge)
        && !challenge.is_empty()
    {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/shop.v1.Orders/Cancel");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_bearer_credential_is_read_in_any_case_of_the_scheme() {
        assert_eq!(
            bearer(&request(&[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            bearer(&request(&[("authorization", "bearer  abc ")])).as_deref(),
            Some("abc")
        );
        assert_eq!(bearer(&request(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&request(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&request(&[])), None);
        assert!(is_grpc(&request(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&request(&[("content-type", "application/json")])));
    }

    #[test]
    fn refusals_speak_the_protocol_of_the_request() {
        let grpc: Response<()> = refuse(true, Refusal::MissingScope("orders:write"));
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "7");
        let http: Response<()> = refuse(false, Refusal::Unauthenticated);
        assert_eq!(http.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="authd", error="invalid_token""#
        );
        let none: Response<()> = refuse(false, Refusal::Missing);
        assert_eq!(none.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="authd""#);
        let denied: Response<()> = refuse(false, Refusal::MissingScope("a:b"));
        assert_eq!(
            denied.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="authd", error="insufficient_scope", scope="a:b""#
        );
        let away: Response<()> = refuse(false, Refusal::Unavailable);
        assert_eq!(away.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(away.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
