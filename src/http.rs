//! The plain-HTTP side on `AUTHD_HTTP_ADDR`: the JWKS and OpenID discovery documents for JWT
//! verifiers that do not speak gRPC, forward-auth for nginx, Traefik and Caddy, a health
//! endpoint for load balancers, the Prometheus scrape of [`crate::telemetry::Metrics`], and the
//! pages the links in mail open ([`pages`]).

use crate::app::App;
use crate::gateway::{self, Decision};
use crate::telemetry::spans::ServerSpan;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use std::net::SocketAddr;
use std::sync::Arc;

mod pages;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/forward-auth", any(forward_auth))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .merge(pages::routes(app.clone()))
        .layer(axum::middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Each request is a server span (`GET /forward-auth`, continuing the caller's W3C trace) with
/// the stable HTTP attributes, measured in `http.server.request.duration`. Only the route is
/// recorded, never the query (it may carry a token).
async fn observe(
    State(app): State<Arc<App>>,
    route: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use opentelemetry::KeyValue;
    use opentelemetry::context::FutureExt as _;
    use tracing::Instrument as _;
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::PATCH => "PATCH",
        _ => "_OTHER",
    };
    let route: Option<String> = route.map(|r| r.as_str().to_string());
    // Probes and scrapes are measured, not traced: they would bury the traces that matter.
    let traced = !matches!(route.as_deref(), Some("/healthz" | "/metrics"));
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.scheme", "http"),
    ];
    if let Some(route) = &route {
        attributes.push(KeyValue::new("http.route", route.clone()));
    }
    let span = if traced {
        ServerSpan::start(crate::call_log_span!("http"), name, request.headers(), attributes)
    } else {
        ServerSpan::untraced()
    };
    let started = std::time::Instant::now();
    let handler = next.run(request).instrument(span.log.clone());
    let response = match span.context() {
        Some(cx) => handler.with_context(cx.clone()).await,
        None => handler.await,
    };
    let status = response.status();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    let mut labels = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
    ];
    if let Some(route) = route {
        labels.push(KeyValue::new("http.route", route));
    }
    if status.is_server_error() {
        span.failed(status.as_str());
        labels.push(KeyValue::new("error.type", status.as_str().to_string()));
    }
    span.end();
    app.metrics
        .calls
        .http_duration
        .record(started.elapsed().as_secs_f64(), &labels);
    response
}

/// How long gateways and verifiers may keep the JWKS: shorter than a new key is published before
/// it signs (`AUTHD_KEY_PUBLISH_AHEAD`).
const JWKS_MAX_AGE: &str = "public, max-age=300";

/// The JWKS, with a strong `ETag` (a digest of the document) so a verifier can revalidate
/// cheaply: `304 Not Modified` when its copy is current.
async fn jwks(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let document = app.keys.current().jwks_json.clone();
    let digest = crate::crypto::token_hash(&document);
    let etag = format!("\"{}\"", crate::crypto::b64url(&digest[..16]));
    let current = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| matches!(tag.trim().trim_start_matches("W/"), t if t == etag || t == "*"));
    let cache = [(header::CACHE_CONTROL, JWKS_MAX_AGE.to_string()), (header::ETAG, etag)];
    if current {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, "application/jwk-set+json")], document).into_response()
}

/// The subset of OpenID Provider metadata that describes how to verify our tokens.
async fn discovery(State(app): State<Arc<App>>) -> impl IntoResponse {
    let ring = app.keys.current();
    let mut algs: Vec<&str> = ring.jwks.iter().filter_map(|k| k["alg"].as_str()).collect();
    algs.sort_unstable();
    algs.dedup();
    let document = serde_json::json!({
        "issuer": app.settings.tokens.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", app.settings.server.public_url),
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    });
    ([(header::CONTENT_TYPE, "application/json")], document.to_string())
}

/// Every `required_scopes` of a query string, together (a proxy that adds its own to a client's
/// cannot be undercut by the client's); `+` and `%XX` decoded.
fn required_scopes_param(uri: &Uri) -> String {
    let query = uri.query().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("required_scopes="))
        .map(percent_decoded)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => decoded.push(b' '),
            (other, None) => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Forward-auth: the target of nginx `auth_request`, Traefik `ForwardAuth` and Caddy
/// `forward_auth`. The `Authorization` header in; 200 with the `x-authd-*` headers, 401 with
/// `WWW-Authenticate`, 403 when the `required_scopes` query parameter is not held, 503 when
/// revocation cannot be proven. Limited per client address (through `AUTHD_TRUSTED_PROXIES`).
async fn forward_auth(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let client = crate::net::client_info(Some(peer.ip()), &headers, &app.settings.server.trusted_proxies);
    let bucket = crate::net::address_bucket(client.ip_address.as_deref());
    if let Err(crate::error::Error::RateLimited(retry)) = app
        .limits
        .enforce(crate::ratelimit::FORWARD_AUTH_PER_ADDRESS, &bucket, &client)
        .await
    {
        let seconds = retry.as_secs().max(1).to_string();
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let Ok(required) = gateway::required_scopes(&required_scopes_param(&uri)) else {
        return text(StatusCode::FORBIDDEN, "required_scopes is not a list of scopes\n");
    };
    // Several Authorization headers match no credential: the upstream might read another one.
    let mut presented = headers.get_all(header::AUTHORIZATION).iter();
    let authorization = match (presented.next(), presented.next()) {
        (Some(one), None) => Some(one.to_str().unwrap_or_default()),
        (Some(_), Some(_)) => Some(""),
        (None, _) => None,
    };
    let decision = match gateway::decide(&app.authenticator, authorization, &required).await {
        Ok(decision) => decision,
        // Revocation that cannot be proven is never an allow.
        Err(crate::error::Error::Unavailable) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "revocation cannot be checked now\n");
        }
        Err(error) => {
            tracing::error!(error = %error.detail(), "forward-auth failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let (status, body) = match &decision {
        Decision::Allow(_) => (StatusCode::OK, "ok\n"),
        Decision::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "no valid credential\n"),
        Decision::Forbidden { .. } => (StatusCode::FORBIDDEN, "insufficient scope\n"),
    };
    let mut response = text(status, body);
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(challenge) = decision.challenge().and_then(|c| HeaderValue::from_str(&c).ok()) {
        out.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Decision::Allow(identity) = &decision {
        for (name, value) in identity.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        }
    }
    response
}

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.state.is_serving() {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

/// Every instrument, in the Prometheus text format (rendered by the `prometheus` crate).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    match app.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not render the metrics");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_scopes_are_read_from_the_query() {
        let uri = |q: &str| format!("/forward-auth?{q}").parse::<Uri>().unwrap();
        assert_eq!(
            required_scopes_param(&uri("a=1&required_scopes=tasks:read+tasks%3Awrite")),
            "tasks:read tasks:write"
        );
        assert_eq!(required_scopes_param(&uri("required_scopes=a%2")), "a%2");
        assert_eq!(required_scopes_param(&uri("other=1")), "");
        assert_eq!(
            required_scopes_param(&uri("required_scopes=&required_scopes=a:b")),
            " a:b"
        );
    }
}
