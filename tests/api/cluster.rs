//! Real authd processes, and private Redis and Postgres servers that a test may stop and start.

use crate::helpers::*;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The suite's Redis, shared by the tests (each uses its own namespace).
pub fn shared_redis() -> String {
    std::env::var("AUTHD_TEST_REDIS_URL")
        .expect("AUTHD_TEST_REDIS_URL is not set: run the suite with ./scripts/test.sh")
}

/// The 99th percentile of some samples.
pub fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// Two replicas of one deployment, both following the feed.
pub async fn two_replicas(env: &[(String, String)]) -> (Replica, Replica) {
    let a = Replica::start(env).await;
    let b = Replica::start(env).await;
    for replica in [&a, &b] {
        replica.await_feed(true, Duration::from_secs(10)).await;
    }
    (a, b)
}

/// `authd keys ARGS` against a deployment.
pub fn keys_command(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_authd"))
        .arg("keys")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The settings every replica of one test deployment shares.
pub fn deployment_env(database_url: &str, redis_url: Option<&str>) -> Vec<(String, String)> {
    let namespace = format!("authd-test-{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("AUTHD_DATABASE_URL", database_url.to_string()),
        ("AUTHD_KEY_ENCRYPTION_KEY", KEK.to_string()),
        ("AUTHD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_string()),
        ("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("AUTHD_REDIS_NAMESPACE", namespace),
        ("AUTHD_HEALTH_PROBE_INTERVAL", "300ms".to_string()),
        ("AUTHD_DATABASE_POOL_SIZE", "4".to_string()),
        ("AUTHD_SHUTDOWN_GRACE", "10s".to_string()),
        ("RUST_LOG", "info".to_string()),
        ("AUTHD_RATE_LIMITS", "false".to_string()),
        ("AUTHD_USER_GRANTABLE_SCOPES", GRANTABLE_IN_TESTS.to_string()),
    ];
    if let Some(url) = redis_url {
        env.push(("AUTHD_REDIS_URL", url.to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// One `authd serve` process.
pub struct Replica {
    pub client: Client,
    /// The gRPC address.
    pub addr: SocketAddr,
    pub http: SocketAddr,
    /// Where the replica's log goes, kept after the test for inspection.
    log: PathBuf,
    child: Child,
}

impl std::ops::Deref for Replica {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Starts a replica and waits until its health says SERVING.
    pub async fn start(env: &[(String, String)]) -> Replica {
        Self::start_on(env, free_port(), free_port()).await
    }

    /// [`Replica::start`] on these ports (e.g. to restart a replica where it was).
    pub async fn start_on(env: &[(String, String)], grpc: u16, http: u16) -> Replica {
        let log = std::env::temp_dir().join(format!("authd-replica-{grpc}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_authd"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AUTHD_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("AUTHD_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn authd");
        let addr: SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "authd exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
            {
                let status = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .map(|r| r.into_inner().status());
                if matches!(status, Ok(ServingStatus::Serving)) {
                    return Replica {
                        client: Client { channel },
                        addr,
                        http: format!("127.0.0.1:{http}").parse().unwrap(),
                        log,
                        child,
                    };
                }
            }
            assert!(Instant::now() < deadline, "authd did not become SERVING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "authd did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn health(&self) -> Result<ServingStatus, tonic::Status> {
        HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|r| r.into_inner().status())
    }

    /// A gauge from `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http).await.ok()?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
    }

    /// Waits until the replica follows the revocation feed (or `synced` is false: until it
    /// noticed it lost it).
    pub async fn await_feed(&self, synced: bool, within: Duration) {
        let want = if synced { 1.0 } else { 0.0 };
        let deadline = Instant::now() + within;
        while self.metric("authd_revocation_feed_synced").await != Some(want) {
            assert!(Instant::now() < deadline, "feed never became synced={synced}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls until `check` holds; returns how long it took, or panics after `within`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A Redis server of this test's own, to stop and start.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("authd-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { port, dir, child: None };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres cluster of this test's own, to stop and start, driven by the project's own
/// `scripts/lib/services.sh` (which runs it as the `postgres` user when we are root).
pub struct PrivatePostgres {
    pub port: u16,
    root: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let port = free_port();
        let root = std::env::temp_dir().join(format!("authd-pg-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        let pg = Self { port, root };
        pg.services(&["start_postgres", "data", &port.to_string(), "fsync=off"]);
        pg
    }

    fn services(&self, args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/services.sh");
        let data = self.root.join("data");
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "data" {
                    data.display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let status = Command::new("bash")
            .arg("-c")
            .arg(r#"source "$0" && chmod 755 "$(dirname "$2")" && "$@""#)
            .arg(script)
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "services.sh {args:?}");
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> String {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let mut admin = diesel_async::AsyncPgConnection::establish(&self.url("postgres"))
            .await
            .unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        self.url(name)
    }

    pub fn stop(&self) {
        self.services(&["stop_postgres", "data"]);
    }

    pub fn resume(&self) {
        self.services(&["start_postgres", "data", &self.port.to_string(), "fsync=off"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
