//! What health reports, and the stop signal the background jobs and streams wait on: shared by
//! the composition root (`startup`) and the jobs, so neither depends on the other.

use crate::app::App;
use crate::grpc::SERVICE_NAMES;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Sets every health entry; once shutdown has begun, only NOT_SERVING.
pub(crate) async fn set_all(app: &App, health: &HealthReporter, status: ServingStatus) {
    let status = if app.is_shutting_down() {
        ServingStatus::NotServing
    } else {
        status
    };
    app.set_serving(status == ServingStatus::Serving);
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(*name, status).await;
    }
}

/// Completes once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
