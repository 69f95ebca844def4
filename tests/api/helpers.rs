//! `spawn_app()`: a real authd on an ephemeral port, on a fresh database copied from a migrated
//! template, reached over a real tonic channel.

use authd::clock::Clock;
use authd::config::Settings;
use authd::proto::api_key_service_client::ApiKeyServiceClient;
use authd::proto::auth_service_client::AuthServiceClient;
use authd::proto::session_service_client::SessionServiceClient;
use authd::proto::token_service_client::TokenServiceClient;
use authd::proto::user_service_client::UserServiceClient;
use authd::proto::*;
use authd::startup::Server;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PASSWORD: &str = "correct horse battery";
/// The scopes plain users may put on API keys in tests.
pub const GRANTABLE_IN_TESTS: &str = "tasks:read,tasks:write";

/// Background jobs that read the database on their own schedule, pushed far apart, for tests
/// that count the queries a call makes (the jobs' first round runs at start, before counting).
pub const QUIET_BACKGROUND: &[(&str, &str)] = &[
    ("AUTHD_HEALTH_PROBE_INTERVAL", "1h"),
    ("AUTHD_REVOCATION_RESYNC_INTERVAL", "1h"),
    ("AUTHD_MAIL_POLL_INTERVAL", "1h"),
    ("AUTHD_HOUSEKEEPING_INTERVAL", "1h"),
];

/// The Postgres superuser URL given by `scripts/test.sh`.
pub fn server_url() -> String {
    std::env::var("AUTHD_TEST_DATABASE_URL")
        .expect("AUTHD_TEST_DATABASE_URL is not set: run the suite with ./scripts/test.sh")
}

pub fn database_url(name: &str) -> String {
    let base = server_url();
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    format!("{prefix}/{name}")
}

const TEMPLATE: &str = "authd_test_template";

/// Creates and migrates the template database once per test process.
fn template() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = AsyncPgConnection::establish(&server_url())
                    .await
                    .expect("connect to the test Postgres");
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
                    .await
                    .unwrap();
                let url = database_url(TEMPLATE);
                let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
                conn.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    .await
                    .unwrap();
                drop(conn);
                authd::store::migrate(&url).await.expect("migrate the template");
            });
        })
        .join()
        .expect("template setup");
    });
    TEMPLATE
}

/// A fresh database, copied from the template.
pub async fn fresh_database() -> (String, String) {
    let template = template();
    let name = format!("authd_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .unwrap();
    let url = database_url(&name);
    (name, url)
}

/// Every log line of every server in this process, at the most verbose level allowed.
pub fn captured_log() -> String {
    String::from_utf8_lossy(&LOG.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buffer = LOG.get_or_init(Default::default).clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(authd::telemetry::filter(
                "trace,h2=debug,hyper=debug,tower=debug,hyper_util=debug",
            ))
            .with_writer(move || LogWriter(buffer.clone()))
            .with_ansi(false)
            .try_init();
    });
}

/// Settings for a test server; `overrides` are `AUTHD_*` variables.
pub fn settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("AUTHD_DATABASE_URL", database_url),
        (
            "AUTHD_KEY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("AUTHD_GRPC_ADDR", "127.0.0.1:0"),
        ("AUTHD_HTTP_ADDR", "127.0.0.1:0"),
        ("AUTHD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("AUTHD_DATABASE_POOL_SIZE", "4"),
        ("AUTHD_KEY_REFRESH_INTERVAL", "1h"),
        ("AUTHD_USAGE_FLUSH_INTERVAL", "1h"),
        // Tests log in many times from 127.0.0.1; the rate-limit tests turn limits on.
        ("AUTHD_RATE_LIMITS", "false"),
        // Plain users' keys carry these in tests (the default is none; a test checks it).
        ("AUTHD_USER_GRANTABLE_SCOPES", GRANTABLE_IN_TESTS),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Mail goes to a throwaway directory unless a test says otherwise (never into the checkout).
    let mail_dir = std::env::temp_dir().join("authd-test-mail");
    env.insert("AUTHD_MAIL_DIR".into(), mail_dir.display().to_string());
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::from_sources(&|name| env.get(name).cloned(), None).expect("test settings")
}

/// Calls to one authd over one channel.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
}

/// A running server and clients for it. Stops the server when dropped.
pub struct TestApp {
    pub client: Client,
    /// Where the server listens for gRPC.
    pub addr: std::net::SocketAddr,
    /// Where it listens for HTTP (`AUTHD_HTTP_ADDR`).
    pub http: std::net::SocketAddr,
    /// The server's shared state, for looking inside (counters, keys).
    pub app: std::sync::Arc<authd::app::App>,
    pub database_url: String,
    pub clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    capture_logs();
    let (_, database_url) = fresh_database().await;
    let application = Server::build(settings(&database_url, overrides), Clock::system(), true)
        .await
        .expect("build the application");
    spawn_on(application).await
}

/// Runs a built application (e.g. a second replica on the same database) as a [`TestApp`].
pub async fn spawn_on(application: Server) -> TestApp {
    capture_logs();
    let app = application.app();
    let database_url = app.settings.database.url.expose().clone();
    let clock = app.clock.clone();
    let addr = application.local_addr();
    let http = application.http_addr();
    let inner = application.app();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    TestApp {
        client: Client { channel },
        addr,
        http,
        app: inner,
        database_url,
        clock,
        stop: Some(stop),
        server: Some(server),
    }
}

/// An HTTP/1.1 answer: status, headers (names lower-cased), body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// One HTTP/1.1 request over a fresh connection, with `headers`; for the HTTP side and for
/// nginx in front of it.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    http_send(addr, method, path, headers, None).await
}

/// A form posted to `path` (`application/x-www-form-urlencoded`, `fields` encoded here).
pub async fn http_post_form(addr: std::net::SocketAddr, path: &str, fields: &[(&str, &str)]) -> HttpAnswer {
    http_post_form_with(addr, path, fields, &[]).await
}

/// [`http_post_form`] with more request headers.
pub async fn http_post_form_with(
    addr: std::net::SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let body: String = fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    http_send(addr, "POST", path, &all, Some(&body)).await
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request with an optional body.
pub async fn http_send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect over HTTP");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line in {raw:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Wraps a message with `authorization: Bearer <credential>`.
pub fn bearer<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

impl std::ops::Deref for TestApp {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        Self { channel }
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20)
    }
    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }
    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }
    pub fn api_keys(&self) -> ApiKeyServiceClient<Channel> {
        ApiKeyServiceClient::new(self.channel.clone())
    }
    pub fn audit_events(&self) -> authd::proto::audit_service_client::AuditServiceClient<Channel> {
        authd::proto::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }
    pub fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel.clone())
    }

    /// Registers a user named `name` (`name@example.com`) with [`PASSWORD`].
    pub async fn register(&self, name: &str) -> User {
        self.auth()
            .register(RegisterRequest {
                email: format!("{name}@example.com"),
                username: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("register")
            .into_inner()
            .user
            .unwrap()
    }

    pub async fn login(&self, identifier: &str, password: &str) -> TokenPair {
        self.auth()
            .login(LoginRequest {
                identifier: identifier.into(),
                password: password.into(),
                device_name: None,
            })
            .await
            .expect("login")
            .into_inner()
            .tokens
            .unwrap()
    }

    /// Registers `name` and logs in.
    pub async fn user(&self, name: &str) -> TokenPair {
        self.register(name).await;
        self.login(name, PASSWORD).await
    }

    pub async fn admin(&self) -> TokenPair {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// A new API key (its secret) for the holder of `credential`, with `scopes`.
    pub async fn api_key(&self, credential: &str, scopes: &[&str]) -> String {
        self.api_keys()
            .create_api_key(bearer(
                CreateApiKeyRequest {
                    label: "test".into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    expires_at: None,
                },
                credential,
            ))
            .await
            .expect("create an API key")
            .into_inner()
            .secret
    }

    /// An API key of the admin holding `tokens:introspect`, for calling Introspect.
    pub async fn introspector(&self) -> String {
        let admin = self.admin().await;
        self.api_key(&admin.access_token, &["tokens:introspect"]).await
    }

    pub async fn introspect(&self, caller: &str, token: &str) -> IntrospectResponse {
        self.tokens()
            .introspect(bearer(
                IntrospectRequest {
                    token: token.into(),
                    token_type_hint: String::new(),
                },
                caller,
            ))
            .await
            .expect("introspect")
            .into_inner()
    }

    pub async fn is_active(&self, caller: &str, token: &str) -> bool {
        self.introspect(caller, token).await.active
    }

    /// GetMe with a credential: the status code it gets.
    /// The account behind `credential`, from `GetMe`.
    pub async fn me(&self, credential: &str) -> User {
        let answer = self.users().get_me(bearer(GetMeRequest {}, credential)).await;
        answer.expect("GetMe").into_inner().user.expect("a user")
    }

    pub async fn get_me_code(&self, credential: &str) -> tonic::Code {
        match self.users().get_me(bearer(GetMeRequest {}, credential)).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    }
}

impl TestApp {
    /// A direct connection to this test's database, for inspecting what the server stored.
    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database_url).await.unwrap()
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().unwrap().await.unwrap()
    }
}

/// The field named by an INVALID_ARGUMENT's `google.rpc.BadRequest` detail.
pub fn bad_request_field(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    details
        .bad_request()
        .and_then(|br| br.field_violations.first().map(|v| v.field.clone()))
}

/// A login through a trusted proxy that names `address` as the client.
pub async fn login_from(
    app: &TestApp,
    address: &str,
    identifier: &str,
    password: &str,
) -> Result<LoginResponse, tonic::Status> {
    let mut request = tonic::Request::new(LoginRequest {
        identifier: identifier.into(),
        password: password.into(),
        device_name: None,
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    app.auth().login(request).await.map(|r| r.into_inner())
}

/// Settings with rate limits on, behind a proxy on loopback that tests name client addresses through.
pub fn behind_a_proxy() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AUTHD_RATE_LIMITS", "true"),
        ("AUTHD_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ]
}

/// A request from `address`, as named by the trusted proxy of [`behind_a_proxy`].
pub fn from_address<T>(message: T, address: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    request
}

impl TestApp {
    /// One `bigint` (e.g. `SELECT count(*) ...`) from this test's database.
    pub async fn count(&self, sql: &str) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut db = self.db().await;
        diesel::sql_query(format!("SELECT ({sql})::bigint AS n"))
            .get_result::<Count>(&mut db)
            .await
            .unwrap()
            .n
    }
}
