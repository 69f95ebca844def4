//! Builds the server (pool, keys, services, health, reflection) and runs it until told to stop.

use crate::app::App;
use crate::clock::Clock;
use crate::config::Settings;
use crate::grpc;
use crate::health::{set_all, stopped};
use crate::proto;
use crate::store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// `WatchRevocations` snapshots sent at once; more watchers wait their turn.
const SNAPSHOTS_AT_ONCE: usize = 2;

/// Requests larger than this are refused by the transport before any handler runs.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// A built server, bound to its port but not yet serving.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    local_addr: SocketAddr,
    http_listener: TcpListener,
}

impl Server {
    /// Connects to the database (migrating it first unless `migrate` is false), loads keys and
    /// revocations, creates the bootstrap admin, and binds the gRPC port.
    pub async fn build(settings: Settings, clock: Clock, migrate: bool) -> anyhow::Result<Self> {
        if let Some(dir) = &settings.audit.archive_dir {
            crate::audit::export::check_archive_dir(dir)
                .map_err(|e| anyhow::anyhow!("AUTHD_AUDIT_ARCHIVE_DIR: {e:#}"))?;
        }
        let url = settings.database.url.expose().clone();
        if migrate {
            store::migrate(&url).await?;
        } else {
            let pending = store::pending_migrations(&url).await?;
            if pending > 0 {
                anyhow::bail!("the database schema is {pending} migration(s) behind: run `authd migrate`");
            }
        }
        let grpc_addr = settings.server.grpc_addr;
        let app = App::build(settings, clock).await?;
        if let (Some(email), Some(password)) = (
            &app.settings.accounts.bootstrap_admin_email,
            &app.settings.accounts.bootstrap_admin_password,
        ) && app
            .accounts
            .ensure_admin(email, None, password.expose())
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?
        {
            tracing::info!(%email, "created the bootstrap admin");
        }
        let listener = TcpListener::bind(grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {grpc_addr}: {e}"))?;
        let local_addr = listener.local_addr()?;
        let http_addr = app.settings.server.http_addr;
        let http_listener = TcpListener::bind(http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {http_addr} (AUTHD_HTTP_ADDR): {e}"))?;
        Ok(Self {
            app,
            listener,
            local_addr,
            http_listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().expect("bound listener has an address")
    }

    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes; then health turns NOT_SERVING at once, in-flight calls
    /// get up to `AUTHD_SHUTDOWN_GRACE` to finish, and pending usage stamps are written.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            app,
            listener,
            local_addr,
            http_listener,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        set_all(&app.state, &health, ServingStatus::Serving).await;
        // Reflection describes authd's services, health, and the google.rpc error details, so
        // grpcurl shows a BadRequest's field violations or a RetryInfo's delay by name.
        let described = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = described().build_v1()?;
        let reflection_v1alpha = described().build_v1alpha()?;

        let stop_rx = app.state.shutdown_signal();
        let jobs = crate::jobs::spawn(app.clone(), health.clone());

        macro_rules! limited {
            ($module:ident :: $server:ident, $api:expr) => {
                proto::$module::$server::new($api)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            };
        }
        let settings = &app.settings;
        let router = tonic::transport::Server::builder()
            .timeout(settings.server.request_timeout)
            .concurrency_limit_per_connection(256)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(grpc::observe::ObserveLayer::new(app.metrics.calls.clone()))
            .layer(grpc::authenticate::AuthenticateLayer::new(
                app.authenticator.clone(),
                &settings.server.trusted_proxies,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(limited!(
                auth_service_server::AuthServiceServer,
                grpc::AuthApi::new(
                    app.accounts.clone(),
                    app.sessions.clone(),
                    app.providers.clone(),
                    app.limits.clone(),
                    app.clock.clone()
                )
            ))
            .add_service(limited!(
                user_service_server::UserServiceServer,
                grpc::UserApi::new(app.accounts.clone(), app.limits.clone(), app.clock.clone())
            ))
            .add_service(limited!(
                session_service_server::SessionServiceServer,
                grpc::SessionApi::new(app.sessions.clone())
            ))
            .add_service(limited!(
                api_key_service_server::ApiKeyServiceServer,
                grpc::ApiKeyApi::new(app.api_keys.clone(), app.limits.clone())
            ))
            .add_service(limited!(
                token_service_server::TokenServiceServer,
                grpc::TokenApi::new(grpc::TokenDeps {
                    authenticator: app.authenticator.clone(),
                    revoker: app.revoker.clone(),
                    keys: app.keys.clone(),
                    limits: app.limits.clone(),
                    clock: app.clock.clone(),
                    state: app.state.clone(),
                    heartbeat: settings.intervals.watch_heartbeat,
                    snapshots: tokio::sync::Semaphore::new(SNAPSHOTS_AT_ONCE),
                })
            ))
            .add_service(
                proto::envoy::service::auth::v3::authorization_server::AuthorizationServer::new(grpc::CheckApi::new(
                    app.authenticator.clone(),
                    settings.gateway.remove_authorization,
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(limited!(
                audit_service_server::AuditServiceServer,
                grpc::AuditApi::new(app.audit_log.clone())
            ));

        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let mut server_stop = stop_rx.clone();
        let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            stopped(&mut server_stop).await;
        }));
        let http_addr = http_listener.local_addr()?;
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(
            axum::serve(
                http_listener,
                crate::http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stopped(&mut http_stop).await })
            .into_future(),
        );
        tracing::info!(%local_addr, %http_addr, "authd is serving gRPC");

        let early_exit = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        if let Some(result) = early_exit {
            app.state.begin_shutdown();
            result??;
            return Ok(());
        }
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        app.state.begin_shutdown();
        set_all(&app.state, &health, ServingStatus::NotServing).await;
        match tokio::time::timeout(app.settings.server.shutdown_grace, &mut server).await {
            Ok(result) => result??,
            Err(_) => {
                tracing::warn!("shutdown grace expired with calls still in flight");
                server.abort();
            }
        }
        // Jobs end at the signal; a job stuck on an unreachable store is not waited for long.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for mut job in jobs {
            if tokio::time::timeout_at(deadline, &mut job).await.is_err() {
                job.abort();
            }
        }
        http.abort();
        match tokio::time::timeout(Duration::from_secs(2), app.api_keys.flush_api_key_usage()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write API key usage at shutdown"),
            Err(_) => tracing::warn!("gave up writing API key usage at shutdown"),
        }
        // The last push waits for the collector: on a thread that may block, not a worker.
        let metrics = app.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
        tracing::info!("authd stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
