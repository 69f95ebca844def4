//! A tonic server whose every call is authenticated by authd, in-process.
//!
//! Run authd, create an API key with scope `tokens:introspect`, then:
//!
//! ```text
//! AUTHD_API_KEY=authd_… cargo run -p authd-client --example tonic_service
//! grpcurl -plaintext -H "authorization: Bearer $ACCESS_TOKEN" 127.0.0.1:50061 grpc.health.v1.Health/Check
//! ```
//!
//! The standard health service stands in for your own services: add them beside it. A handler
//! reads the caller with `request.extensions().get::<authd_client::Identity>()`.

use authd_client::{AuthLayer, Options, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let authd = std::env::var("AUTHD_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let key =
        std::env::var("AUTHD_API_KEY").map_err(|_| "set AUTHD_API_KEY to an API key with scope tokens:introspect")?;
    let verifier = Verifier::connect(&authd, &key, Options::default()).await?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let addr = "127.0.0.1:50061".parse()?;
    println!("serving on {addr}; every call needs `authorization: Bearer <authd access token or API key>`");
    tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier).require_scope_for("/grpc.health.v1.Health/Watch", "health:watch"))
        .add_service(health)
        .serve(addr)
        .await?;
    Ok(())
}
