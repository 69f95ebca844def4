//! The gRPC adapters: decode a request into domain calls, encode the result. One place maps
//! domain errors to `tonic::Status` ([`status`]); one place reads the caller's credential
//! ([`request`]).

mod api_key;
mod audit;
mod auth;
mod bounds;
pub mod convert;
mod request;
mod session;
pub mod status;
mod token;
mod user;

pub use api_key::ApiKeyApi;
pub use audit::AuditApi;
pub use auth::AuthApi;
pub use session::SessionApi;
pub use token::{TokenApi, introspection};
pub use user::UserApi;

/// The fully qualified names of authd's own services, as health and reflection list them.
pub const SERVICE_NAMES: &[&str] = &[
    "auth.v1.AuthService",
    "auth.v1.UserService",
    "auth.v1.SessionService",
    "auth.v1.ApiKeyService",
    "auth.v1.TokenService",
    "auth.v1.AuditService",
];
