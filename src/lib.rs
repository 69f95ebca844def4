// Tests may read the system clock; the server reads it only through `clock::Clock`.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

/// The protobuf API (`auth.v1`), from the `authd-proto` crate.
pub mod proto {
    pub use authd_proto::*;
}

pub mod accounts;
pub mod api_keys;
pub mod app;
pub mod audit;
pub mod authn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod mail;
pub mod net;
pub mod ratelimit;
pub mod revocation;
pub mod secret;
pub mod sessions;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
