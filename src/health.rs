//! What health reports, and the stop signal the background jobs and streams wait on: shared by
//! the composition root (`startup`), the jobs and the streams, so none depends on another.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The fully qualified names of authd's own services, as health and reflection list them.
pub const SERVICE_NAMES: &[&str] = &[
    "auth.v1.AuthService",
    "auth.v1.UserService",
    "auth.v1.SessionService",
    "auth.v1.ApiKeyService",
    "auth.v1.TokenService",
    "auth.v1.AuditService",
    "envoy.service.auth.v3.Authorization",
];

/// Whether the server is serving, and whether it has begun to shut down.
#[derive(Debug)]
pub struct ServerState {
    serving: AtomicBool,
    /// Turns true when the server begins to shut down; streams and jobs end on it.
    shutdown: watch::Sender<bool>,
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            serving: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        }
    }
}

impl ServerState {
    /// What health reports for the whole server.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes when the server begins to shut down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Sets every health entry; once shutdown has begun, only NOT_SERVING.
pub(crate) async fn set_all(state: &ServerState, health: &HealthReporter, status: ServingStatus) {
    let status = if state.is_shutting_down() {
        ServingStatus::NotServing
    } else {
        status
    };
    state.set_serving(status == ServingStatus::Serving);
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(*name, status).await;
    }
}

/// Completes once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
