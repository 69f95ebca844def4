//! The gRPC adapters: decode a request into calls of the domain services each adapter holds,
//! encode the result. One layer opens each call's span and measures it ([`observe`]), the next
//! authenticates every RPC ([`authenticate`]);
//! one place maps domain errors to `tonic::Status` ([`status`]); rate limits are applied here,
//! audit events are recorded by the domain.

mod api_key;
mod audit;
mod auth;
pub(crate) mod authenticate;
pub(crate) mod bounds;
mod check;
pub(crate) mod convert;
pub(crate) mod observe;
mod request;
mod session;
pub(crate) mod status;
mod token;
mod user;

pub use api_key::ApiKeyApi;
pub use audit::AuditApi;
pub use auth::AuthApi;
pub use check::CheckApi;
pub use session::SessionApi;
pub use token::{TokenApi, TokenDeps, introspection};
pub use user::UserApi;
