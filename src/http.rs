//! The plain-HTTP side on `AUTHD_HTTP_ADDR`: the JWKS and OpenID discovery documents for JWT
//! verifiers that do not speak gRPC, a health endpoint for load balancers, and a few metrics.

use crate::app::App;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn jwks(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        app.keys.current().jwks_json.clone(),
    )
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

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.state.is_serving() {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

/// Prometheus text format.
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let state = app.pool.state();
    let (hits, misses) = app.authenticator.verified_tokens().hits_and_misses();
    let body = format!(
        "# HELP authd_up Whether authd reports SERVING.\n# TYPE authd_up gauge\nauthd_up {}\n\
         # HELP authd_revocations_live Revocations held in the in-process view.\n# TYPE authd_revocations_live gauge\nauthd_revocations_live {}\n\
         # HELP authd_db_connections Database connections open in the pool.\n# TYPE authd_db_connections gauge\nauthd_db_connections {}\n\
         # HELP authd_db_connections_idle Idle database connections in the pool.\n# TYPE authd_db_connections_idle gauge\nauthd_db_connections_idle {}\n\
         # HELP authd_signing_keys_published Keys in the JWKS.\n# TYPE authd_signing_keys_published gauge\nauthd_signing_keys_published {}\n\
         # HELP authd_revocation_feed_synced Whether the in-process revocation view is known current (1), or each credential is checked in Postgres (0).\n# TYPE authd_revocation_feed_synced gauge\nauthd_revocation_feed_synced {}\n\
         # HELP authd_token_cache_entries Verified access tokens held in the cache.\n# TYPE authd_token_cache_entries gauge\nauthd_token_cache_entries {}\n\
         # HELP authd_token_cache_hits_total Access tokens answered from the cache of verified tokens.\n# TYPE authd_token_cache_hits_total counter\nauthd_token_cache_hits_total {}\n\
         # HELP authd_token_cache_misses_total Access tokens whose signature was checked.\n# TYPE authd_token_cache_misses_total counter\nauthd_token_cache_misses_total {}\n",
        u8::from(app.state.is_serving()),
        app.revoker.view().len(),
        state.connections,
        state.idle_connections,
        app.keys.current().jwks.len(),
        u8::from(app.revoker.feed().is_synced()),
        app.authenticator.verified_tokens().len(),
        hits,
        misses,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
