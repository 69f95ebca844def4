//! The integration suite: one binary, each test against its own authd on its own database.

// Tests compare the server's times with the system clock.
#![allow(clippy::disallowed_methods)]

mod cluster;
mod helpers;
mod otlp;

mod accounts;
mod admin;
mod api_keys;
mod architecture;
mod archive;
mod audit;
mod browser;
mod cli;
mod client;
mod deploy;
mod gateway;
mod hardening;
mod introspection;
mod limits;
mod mail;
mod pages;
mod providers;
mod replicas;
mod server;
mod sessions;
mod smtp;
mod suspicious;
mod telemetry;
