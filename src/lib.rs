// Tests may read the system clock; the server reads it only through `clock::Clock`.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

/// The protobuf API (`auth.v1`), from the `authd-proto` crate.
pub mod proto {
    pub use authd_proto::*;
}

pub mod accounts;
pub mod api_keys;
pub mod app;
pub(crate) mod audit;
pub mod authn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub(crate) mod devices;
pub mod domain;
pub mod error;
pub(crate) mod gateway;
pub mod grpc;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod jobs;
pub(crate) mod mail;
pub(crate) mod net;
pub mod providers;
pub(crate) mod ratelimit;
mod redis_conn;
pub mod revocation;
pub mod secret;
pub(crate) mod sessions;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
