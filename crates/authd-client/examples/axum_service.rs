//! An axum HTTP service behind authd's layer: `GET /me` answers who is calling, `DELETE /orders`
//! also needs scope `orders:write`.
//!
//! ```text
//! AUTHD_API_KEY=authd_… cargo run -p authd-client --example axum_service
//! curl -H "authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3000/me
//! ```

use authd_client::{AuthLayer, Identity, Options, Verifier};
use axum::routing::{delete, get};
use axum::{Extension, Router};

async fn me(Extension(identity): Extension<Identity>) -> String {
    format!(
        "{} ({}), scopes {:?}\n",
        identity.username, identity.subject, identity.scopes
    )
}

async fn cancel_orders(Extension(identity): Extension<Identity>) -> String {
    format!("orders of {} cancelled\n", identity.username)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let authd = std::env::var("AUTHD_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let key =
        std::env::var("AUTHD_API_KEY").map_err(|_| "set AUTHD_API_KEY to an API key with scope tokens:introspect")?;
    let verifier = Verifier::connect(&authd, &key, Options::default()).await?;
    let app = Router::new()
        .route("/me", get(me))
        .route("/orders", delete(cancel_orders))
        .layer(AuthLayer::new(verifier).require_scope_for("/orders", "orders:write"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("serving on http://127.0.0.1:3000");
    axum::serve(listener, app).await?;
    Ok(())
}
