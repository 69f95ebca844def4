//! The integration suite: one binary, each test against its own authd on its own database.

mod helpers;

mod accounts;
mod api_keys;
mod cli;
mod introspection;
mod server;
mod sessions;
