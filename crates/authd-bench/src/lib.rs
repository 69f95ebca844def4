//! `authd-bench`: a load generator that drives a running authd over gRPC and prints throughput and
//! latency per scenario, then the performance targets (docs/PERFORMANCE.md) against what it
//! measured in the same run.
//!
//! It sets up what it needs through the public API: an administrator's login (the bootstrap admin
//! of `AUTHD_BOOTSTRAP_ADMIN_EMAIL` / `AUTHD_BOOTSTRAP_ADMIN_PASSWORD[_FILE]`) creates an API key
//! with scope `tokens:introspect`, and users are registered under a random tag. Run it against a
//! server started with `AUTHD_RATE_LIMITS=false`: its logins all come from one address.

pub mod hashing;

use anyhow::{Context, bail};
use authd_client::cache::DEFAULT_CAPACITY as DEFAULT_TOKEN_CACHE_SIZE;
use authd_proto::envoy::service::auth::v3::attribute_context::{self, HttpRequest};
use authd_proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use authd_proto::{
    ApiKey, CreateApiKeyRequest, ListAuditEventsRequest, ListUsersRequest, LoginRequest, RefreshRequest,
    RegisterRequest, RevokeApiKeyRequest, api_key_service_client::ApiKeyServiceClient,
    audit_service_client::AuditServiceClient, auth_service_client::AuthServiceClient,
    user_service_client::UserServiceClient,
};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// What to load the server with.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `grpc.health.v1.Health/Check`: an RPC that does next to nothing, the ceiling.
    Health,
    /// `Introspect` of one valid access token, again and again.
    IntrospectRepeated,
    /// Envoy's `Check` of a request carrying one valid access token, again and again.
    Check,
    /// `Refresh` chains, one session per worker (their access tokens feed `introspect-distinct`).
    Refresh,
    /// `Introspect` of many distinct access tokens, each call a signature check.
    IntrospectDistinct,
    /// `Login` with a correct password (one argon2id verification each).
    Login,
    /// A steady `Introspect` rate alone, then the same rate during a login flood.
    Mix,
    /// `authd_client::Verifier::verify` of one valid access token, again and again, in-process
    /// (its verified-token cache on, as by default): one core, no network.
    VerifyHot,
    /// `Verifier::verify` of the distinct access tokens of `introspect-distinct`, with the
    /// verified-token cache off so that every call checks a signature: one core, no network.
    VerifyDistinct,
    /// `ListUsers` with a prefix that matches the bench's own users (a search for a name), by
    /// the administrator. Not in the default set: the scale bench runs it.
    ListUsers,
    /// `ListAuditEvents` of one user (`--audit-user`, else the administrator), walking up to
    /// ten pages of 50 before starting over. Not in the default set: the scale bench runs it.
    ListAudit,
    /// `list-audit` filtered by the event type `login.failed` (which the scale bench's heavy user
    /// has none of: the worst case for a filter). Not in the default set.
    ListAuditType,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::Health,
        Scenario::IntrospectRepeated,
        Scenario::Check,
        Scenario::Refresh,
        Scenario::IntrospectDistinct,
        Scenario::Login,
        Scenario::Mix,
        Scenario::VerifyHot,
        Scenario::VerifyDistinct,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::IntrospectRepeated => "introspect-repeated",
            Scenario::Check => "check",
            Scenario::Refresh => "refresh",
            Scenario::IntrospectDistinct => "introspect-distinct",
            Scenario::Login => "login",
            Scenario::Mix => "mix",
            Scenario::VerifyHot => "verify-hot",
            Scenario::VerifyDistinct => "verify-distinct",
            Scenario::ListUsers => "list-users",
            Scenario::ListAudit => "list-audit",
            Scenario::ListAuditType => "list-audit-type",
        }
    }
}

/// An expiry two hours ahead, for the bench's API key. The load generator is a client of authd:
/// the wall clock is its clock.
#[allow(clippy::disallowed_methods)]
fn in_two_hours() -> prost_types::Timestamp {
    let at = std::time::SystemTime::now() + Duration::from_secs(2 * 3600);
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "authd-bench",
    version,
    about = "Drive a running authd with load; print throughput, latency and the performance targets"
)]
pub struct BenchArgs {
    /// The gRPC address of the authd to drive (defaults to AUTHD_GRPC_ADDR).
    #[arg(long)]
    pub target: Option<String>,
    /// HTTP/2 connections to open; the workers share them.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight at once (closed loop: each worker sends its next request when the
    /// previous one is answered).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds each scenario is measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before each measurement, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Scenarios to run, comma-separated, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    pub scenarios: Vec<Scenario>,
    /// Distinct access tokens for `introspect-distinct` and `verify-distinct`, minted with
    /// Refresh. Keep it above the server's AUTHD_TOKEN_CACHE_SIZE, so that every call checks a
    /// signature (`verify-distinct` turns its verifier's cache off regardless).
    #[arg(long, default_value_t = 40_000)]
    pub distinct_tokens: usize,
    /// Logins in flight at once during the flood of `mix`.
    #[arg(long, default_value_t = 16)]
    pub flood_concurrency: usize,
    /// Introspections per second offered in `mix`, alone and during the flood (default: half of
    /// what `introspect-repeated` reached in this run, else 1000).
    #[arg(long)]
    pub mix_rate: Option<f64>,
    /// The administrator who creates the bench's API key.
    #[arg(long, env = "AUTHD_BOOTSTRAP_ADMIN_EMAIL")]
    pub admin_email: String,
    /// A file holding that administrator's password (else AUTHD_BOOTSTRAP_ADMIN_PASSWORD is read).
    #[arg(long, env = "AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// The server's process id, to report its resident memory (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The user whose audit trail `list-audit` pages through (default: the administrator).
    #[arg(long)]
    pub audit_user: Option<String>,
    /// Also write the results to this file as one JSON object (for charts and the scale bench).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One call's outcome: an error says what went wrong.
type Outcome = Result<(), String>;

/// A kind of request, sent again and again by one worker.
trait Call: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Outcome> + Send;
}

fn failed(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn with_bearer<T>(message: T, bearer: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

struct HealthCall(HealthClient<Channel>);

impl Call for HealthCall {
    async fn call(&mut self) -> Outcome {
        self.0
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(drop)
            .map_err(failed)
    }
}

/// `IntrospectRequest` as it goes on the wire, its token held as shared bytes (no copy per call).
#[derive(Clone, PartialEq, prost::Message)]
struct IntrospectWire {
    #[prost(bytes = "bytes", tag = "1")]
    token: prost::bytes::Bytes,
}

/// The one field of `IntrospectResponse` the generator checks; the others are skipped unread, as
/// a gateway that needs only some of them would. The server sends the whole answer regardless.
#[derive(Clone, PartialEq, prost::Message)]
struct IntrospectActive {
    #[prost(bool, tag = "1")]
    active: bool,
}

const INTROSPECT_PATH: &str = "/auth.v1.TokenService/Introspect";

/// Introspects the tokens of a shared list in turn; an inactive answer is a failure.
struct IntrospectCall {
    client: tonic::client::Grpc<Channel>,
    bearer: MetadataValue<Ascii>,
    tokens: Arc<Vec<prost::bytes::Bytes>>,
    next: Arc<AtomicUsize>,
}

impl Call for IntrospectCall {
    async fn call(&mut self) -> Outcome {
        let token = self.tokens[self.next.fetch_add(1, Ordering::Relaxed) % self.tokens.len()].clone();
        let request = with_bearer(IntrospectWire { token }, &self.bearer);
        self.client
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let codec = tonic_prost::ProstCodec::<IntrospectWire, IntrospectActive>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(INTROSPECT_PATH);
        let answer = self.client.unary(request, path, codec).await.map_err(failed)?;
        if answer.get_ref().active {
            Ok(())
        } else {
            Err("introspection answered active: false".into())
        }
    }
}

/// `CheckRequest` as it goes on the wire, encoded once (no copy per call).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckWire {
    #[prost(bytes = "bytes", tag = "1")]
    attributes: prost::bytes::Bytes,
}

/// The `status` of a `CheckResponse`, the one field the generator checks (as for Introspect, the
/// rest is skipped unread; the server encodes it all regardless).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckStatus {
    #[prost(message, optional, tag = "1")]
    status: Option<RpcCode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcCode {
    #[prost(int32, tag = "1")]
    code: i32,
}

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Envoy's `Check` of one request, as the ext_authz filter sends it.
struct CheckCall {
    client: tonic::client::Grpc<Channel>,
    bearer: MetadataValue<Ascii>,
    request: CheckWire,
}

impl Call for CheckCall {
    async fn call(&mut self) -> Outcome {
        let request = with_bearer(self.request.clone(), &self.bearer);
        self.client
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let codec = tonic_prost::ProstCodec::<CheckWire, CheckStatus>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(CHECK_PATH);
        let answer = self.client.unary(request, path, codec).await.map_err(failed)?;
        match answer.get_ref().status.as_ref().map(|s| s.code) {
            Some(0) => Ok(()),
            other => Err(format!("Check did not allow the request (status {other:?})")),
        }
    }
}

/// A forwarded request carrying `token`, encoded as Envoy's `CheckRequest` (its generated type,
/// so the wire form is the real one).
fn check_request(token: &str) -> CheckWire {
    use prost::Message as _;
    let http = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let attributes = request.attributes.unwrap_or_default().encode_to_vec();
    CheckWire {
        attributes: attributes.into(),
    }
}

#[derive(Clone)]
struct Account {
    username: String,
    password: String,
}

/// Logs the users of a shared list in, in turn.
struct LoginCall {
    client: AuthServiceClient<Channel>,
    accounts: Arc<Vec<Account>>,
    next: Arc<AtomicUsize>,
}

impl Call for LoginCall {
    async fn call(&mut self) -> Outcome {
        let account = &self.accounts[self.next.fetch_add(1, Ordering::Relaxed) % self.accounts.len()];
        let request = LoginRequest {
            identifier: account.username.clone(),
            password: account.password.clone(),
            device_name: Some("authd bench".into()),
        };
        self.client.login(request).await.map(drop).map_err(failed)
    }
}

/// Refreshes one session's tokens again and again, keeping the access tokens it is given.
struct RefreshCall {
    client: AuthServiceClient<Channel>,
    refresh_token: String,
    minted: Vec<String>,
}

impl Call for RefreshCall {
    async fn call(&mut self) -> Outcome {
        let request = RefreshRequest {
            refresh_token: self.refresh_token.clone(),
        };
        let pair = self
            .client
            .refresh(request)
            .await
            .map_err(failed)?
            .into_inner()
            .tokens
            .ok_or("Refresh answered no tokens")?;
        self.refresh_token = pair.refresh_token;
        self.minted.push(pair.access_token);
        Ok(())
    }
}

/// Searches the users by a name prefix, as the administrator; an empty page is a failure.
struct ListUsersCall {
    client: UserServiceClient<Channel>,
    bearer: MetadataValue<Ascii>,
    query: String,
}

impl Call for ListUsersCall {
    async fn call(&mut self) -> Outcome {
        let request = ListUsersRequest {
            page_size: 50,
            page_token: String::new(),
            query: self.query.clone(),
        };
        let page = self
            .client
            .list_users(with_bearer(request, &self.bearer))
            .await
            .map_err(failed)?
            .into_inner();
        if page.users.is_empty() {
            return Err(format!("ListUsers found no user for {:?}", self.query));
        }
        Ok(())
    }
}

/// Pages through one user's audit trail, ten pages of 50 at most, then starts over.
struct ListAuditCall {
    client: AuditServiceClient<Channel>,
    bearer: MetadataValue<Ascii>,
    user_id: String,
    /// The event type to filter by (empty: every type).
    event_type: String,
    page_token: String,
    pages: usize,
}

impl Call for ListAuditCall {
    async fn call(&mut self) -> Outcome {
        let request = ListAuditEventsRequest {
            page_size: 50,
            page_token: std::mem::take(&mut self.page_token),
            user_id: self.user_id.clone(),
            r#type: self.event_type.clone(),
            ..ListAuditEventsRequest::default()
        };
        let page = self
            .client
            .list_audit_events(with_bearer(request, &self.bearer))
            .await
            .map_err(failed)?
            .into_inner();
        self.pages += 1;
        if self.pages < 10 {
            self.page_token = page.next_page_token;
        } else {
            self.pages = 0;
        }
        if self.page_token.is_empty() {
            self.pages = 0;
        }
        Ok(())
    }
}

/// What one scenario measured.
#[derive(Default)]
struct Measured {
    /// Latencies of the successful calls, in microseconds, sorted.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    /// The server's largest resident set while it ran, in KiB.
    peak_rss_kib: Option<u64>,
    /// The CPU time the server spent in the window, in seconds.
    server_cpu_s: Option<f64>,
}

/// What one worker counted.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, sent: Instant) {
        match outcome {
            Ok(()) => self.latencies.push(micros(sent.elapsed())),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

impl Measured {
    fn merge(window: Duration, tallies: Vec<Tally>) -> Self {
        let mut measured = Measured {
            window,
            ..Measured::default()
        };
        for tally in tallies {
            measured.latencies.extend(tally.latencies);
            measured.errors += tally.errors;
            if measured.first_error.is_none() {
                measured.first_error = tally.first_error;
            }
        }
        measured.latencies.sort_unstable();
        measured
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// The server's CPU time per successful call, in microseconds.
    fn server_us_per_call(&self) -> Option<f64> {
        let calls = self.latencies.len();
        self.server_cpu_s.filter(|_| calls > 0).map(|s| s * 1e6 / calls as f64)
    }

    /// The latency below which `q` of the calls fall, in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[rank - 1]) / 1000.0
    }
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// Each worker sends its next request as soon as the previous one is answered.
async fn closed_loop<C: Call>(calls: Vec<C>, warmup: Duration, duration: Duration) -> (Measured, Vec<C>) {
    let from = Instant::now() + warmup;
    let until = from + duration;
    let cpu = SERVER_PID
        .get()
        .copied()
        .map(|pid| tokio::spawn(server_cpu_between(pid, from, until)));
    let workers: Vec<_> = calls
        .into_iter()
        .map(|mut call| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let outcome = call.call().await;
                    if sent >= from {
                        tally.record(outcome, sent);
                    }
                }
                (tally, call)
            })
        })
        .collect();
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for worker in workers {
        let (part, call) = worker.await.expect("bench worker panicked");
        parts.push(part);
        calls.push(call);
    }
    let mut measured = Measured::merge(duration, parts);
    if let Some(cpu) = cpu {
        measured.server_cpu_s = cpu.await.ok().flatten();
    }
    (measured, calls)
}

/// The server whose CPU time the closed-loop scenarios measure (`--server-pid`).
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The CPU time (user and system) process `pid` spends between `from` and `until`, in seconds.
async fn server_cpu_between(pid: u32, from: Instant, until: Instant) -> Option<f64> {
    tokio::time::sleep_until(from.into()).await;
    let before = cpu_ticks(pid)?;
    tokio::time::sleep_until(until.into()).await;
    let after = cpu_ticks(pid)?;
    // /proc counts in USER_HZ, 100 a second on Linux.
    Some(after.saturating_sub(before) as f64 / 100.0)
}

/// `utime + stime` of a process from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), …, utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The workers together send `rate` requests per second on a fixed schedule, whatever the
/// answers' latency (open loop); a latency counts from the moment the request was sent.
async fn paced<C: Call>(calls: Vec<C>, rate: f64, warmup: Duration, duration: Duration) -> Measured {
    let start = tokio::time::Instant::now();
    let from = start + warmup;
    let until = from + duration;
    let workers = calls.len();
    let interval = Duration::from_secs_f64(workers as f64 / rate);
    let handles: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(i, mut call)| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = start + interval.mul_f64(i as f64 / workers as f64);
                while next < until {
                    tokio::time::sleep_until(next).await;
                    let sent = Instant::now();
                    let outcome = call.call().await;
                    if next >= from {
                        tally.record(outcome, sent);
                    }
                    next += interval;
                }
                tally
            })
        })
        .collect();
    let mut parts = Vec::new();
    for handle in handles {
        parts.push(handle.await.expect("bench worker panicked"));
    }
    Measured::merge(duration, parts)
}

/// Samples a process's resident memory from /proc every 50 ms and keeps the largest value.
struct MemoryWatch {
    pid: u32,
    peak: Arc<AtomicU64>,
}

impl MemoryWatch {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let sampled = peak.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Some(kib) = resident_kib(pid) else { return };
                sampled.fetch_max(kib, Ordering::Relaxed);
            }
        });
        Self { pid, peak }
    }

    /// The largest value since the last call.
    fn take_peak(&self) -> Option<u64> {
        let sampled = self.peak.swap(0, Ordering::Relaxed);
        let now = resident_kib(self.pid)?;
        Some(sampled.max(now))
    }
}

/// `VmRSS` of a process, in KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What the scenarios share: connections, the API key, the users.
struct Fixture {
    /// The target as a URI (`http://…`), for the verifier of the `verify-*` scenarios.
    uri: String,
    channels: Vec<Channel>,
    /// The bench's API key as the `authorization` header ("Bearer …").
    api_key: MetadataValue<Ascii>,
    /// The same API key, the raw secret (for `Verifier::connect`).
    api_secret: String,
    api_key_id: String,
    admin_bearer: MetadataValue<Ascii>,
    /// The administrator's user id.
    admin_id: String,
    tag: String,
}

impl Fixture {
    fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    async fn set_up(args: &BenchArgs, target: &str) -> anyhow::Result<Self> {
        let uri = if target.contains("://") {
            target.to_string()
        } else {
            format!("http://{target}")
        };
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            let channel = Endpoint::from_shared(uri.clone())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .with_context(|| format!("cannot connect to {target}"))?;
            channels.push(channel);
        }
        let password = admin_password(args)?;
        let admin = AuthServiceClient::new(channels[0].clone())
            .login(LoginRequest {
                identifier: args.admin_email.clone(),
                password,
                device_name: Some("authd bench".into()),
            })
            .await
            .map_err(|s| anyhow::anyhow!("the administrator's login failed: {}", failed(s)))?
            .into_inner();
        let admin_token = admin.tokens.context("Login answered no tokens")?.access_token;
        let admin_id = admin.user.map(|user| user.id).unwrap_or_default();
        let admin_bearer: MetadataValue<Ascii> = format!("Bearer {admin_token}").parse()?;
        let tag = authd_client::random_token()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect::<String>()
            .to_ascii_lowercase();
        let created = ApiKeyServiceClient::new(channels[0].clone())
            .create_api_key(with_bearer(
                CreateApiKeyRequest {
                    label: format!("authd bench {tag}"),
                    scopes: vec!["tokens:introspect".to_string()],
                    expires_at: Some(in_two_hours()),
                },
                &admin_bearer,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("creating the bench's API key failed: {}", failed(s)))?
            .into_inner();
        let ApiKey { id, .. } = created.api_key.unwrap_or_default();
        Ok(Self {
            api_key: format!("Bearer {}", created.secret).parse()?,
            api_secret: created.secret,
            api_key_id: id,
            admin_bearer,
            admin_id,
            uri,
            channels,
            tag,
        })
    }

    /// Registers `count` users named `b<tag><group><i>`, a few at a time.
    async fn register(&self, group: &str, count: usize) -> anyhow::Result<Vec<Account>> {
        let accounts: Vec<Account> = (0..count)
            .map(|i| Account {
                username: format!("b{}{group}{i}", self.tag),
                password: authd_client::random_token(),
            })
            .collect();
        for (batch_no, batch) in accounts.chunks(16).enumerate() {
            let calls = batch.iter().enumerate().map(|(i, account)| {
                let mut client = AuthServiceClient::new(self.channel(batch_no * 16 + i));
                let request = RegisterRequest {
                    email: format!("{}@bench.example.com", account.username),
                    username: account.username.clone(),
                    password: account.password.clone(),
                };
                async move { client.register(request).await }
            });
            for result in futures_join_all(calls).await {
                result.map_err(|s| anyhow::anyhow!("registering a bench user failed: {}", failed(s)))?;
            }
        }
        Ok(accounts)
    }

    /// Logs each account in once; returns (access token, refresh token) per account.
    async fn log_in(&self, accounts: &[Account]) -> anyhow::Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for (batch_no, batch) in accounts.chunks(16).enumerate() {
            let calls = batch.iter().enumerate().map(|(i, account)| {
                let mut client = AuthServiceClient::new(self.channel(batch_no * 16 + i));
                let request = LoginRequest {
                    identifier: account.username.clone(),
                    password: account.password.clone(),
                    device_name: Some("authd bench".into()),
                };
                async move { client.login(request).await }
            });
            for result in futures_join_all(calls).await {
                let response = result.map_err(|s| anyhow::anyhow!("a bench user's login failed: {}", failed(s)))?;
                let pair = response.into_inner().tokens.context("Login answered no tokens")?;
                pairs.push((pair.access_token, pair.refresh_token));
            }
        }
        Ok(pairs)
    }

    fn introspect_calls(&self, workers: usize, tokens: &[String]) -> Vec<IntrospectCall> {
        let tokens: Arc<Vec<prost::bytes::Bytes>> = Arc::new(
            tokens
                .iter()
                .map(|t| prost::bytes::Bytes::copy_from_slice(t.as_bytes()))
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        (0..workers)
            .map(|i| IntrospectCall {
                client: tonic::client::Grpc::new(self.channel(i)),
                bearer: self.api_key.clone(),
                tokens: tokens.clone(),
                next: next.clone(),
            })
            .collect()
    }

    fn login_calls(&self, workers: usize, accounts: &Arc<Vec<Account>>) -> Vec<LoginCall> {
        let next = Arc::new(AtomicUsize::new(0));
        (0..workers)
            .map(|i| LoginCall {
                client: AuthServiceClient::new(self.channel(i)),
                accounts: accounts.clone(),
                next: next.clone(),
            })
            .collect()
    }

    /// A verifier following the target with the bench's API key, its verified-token cache of
    /// `token_cache_size` tokens (0: off, every access token a signature check).
    async fn verifier(&self, token_cache_size: usize) -> anyhow::Result<authd_client::Verifier> {
        let options = authd_client::Options {
            token_cache_size,
            ..authd_client::Options::default()
        };
        authd_client::Verifier::connect(&self.uri, &self.api_secret, options)
            .await
            .with_context(|| format!("connecting an authd_client::Verifier to {}", self.uri))
    }

    /// Revokes the bench's API key (the users stay; they are tagged `b<tag>`).
    async fn tear_down(&self) {
        let request = with_bearer(
            RevokeApiKeyRequest {
                id: self.api_key_id.clone(),
            },
            &self.admin_bearer,
        );
        if let Err(status) = ApiKeyServiceClient::new(self.channel(0)).revoke_api_key(request).await {
            eprintln!("could not revoke the bench's API key: {}", failed(status));
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("bench task panicked"));
    }
    outputs
}

fn admin_password(args: &BenchArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.admin_password_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    std::env::var("AUTHD_BOOTSTRAP_ADMIN_PASSWORD").context(
        "the administrator's password: set AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE or AUTHD_BOOTSTRAP_ADMIN_PASSWORD",
    )
}

/// How long argon2id hashes took, timed by the generator.
struct Hashing {
    params: hashing::Argon2Params,
    /// One hash alone, and one per core at once, in each timing.
    alone_each: Vec<Duration>,
    together_each: Vec<Duration>,
}

impl Hashing {
    /// Both timings' figures.
    fn and(mut self, other: Hashing) -> Hashing {
        self.alone_each.extend(other.alone_each);
        self.together_each.extend(other.together_each);
        self
    }

    /// The mean over the timings of one hash alone.
    fn alone(&self) -> Duration {
        mean(&self.alone_each)
    }

    /// The mean over the timings of one hash per core at once.
    fn together(&self) -> Duration {
        mean(&self.together_each)
    }
}

fn mean(each: &[Duration]) -> Duration {
    each.iter().sum::<Duration>() / u32::try_from(each.len().max(1)).unwrap_or(u32::MAX)
}

/// The results of the scenarios run, for the targets.
#[derive(Default)]
struct Results {
    health: Option<f64>,
    repeated: Option<f64>,
    check: Option<f64>,
    distinct: Option<f64>,
    login: Option<(f64, Hashing)>,
    mix: Option<(f64, f64)>,
    /// `verify-hot`: (calls per second on one core, mean µs per call).
    verify_hot: Option<(f64, f64)>,
    /// `verify-distinct`: (calls per second on one core, mean µs per call).
    verify_distinct: Option<(f64, f64)>,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
}

/// The rows of the run, printed as they come and kept for `--json`.
#[derive(Default)]
struct Report {
    /// One JSON object per row.
    rows: Vec<String>,
}

/// `value` as a JSON number, or `null` when it is not finite.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => write!(quoted, "\\u{:04x}", c as u32).expect("write to a String"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Resident memory in KiB as JSON megabytes (`null` when unknown).
fn json_mb(kib: Option<u64>) -> String {
    kib.map_or_else(|| "null".into(), |kib| json_number(kib as f64 / 1024.0))
}

impl Report {
    fn measured(&mut self, name: &str, m: &Measured) {
        println!("{}", row(name, m));
        self.rows.push(format!(
            r#"{{"scenario":{},"requests":{},"rps":{},"p50_ms":{},"p90_ms":{},"p99_ms":{},"errors":{},"peak_rss_mb":{},"server_us_per_call":{}}}"#,
            json_string(name),
            m.latencies.len(),
            json_number(m.rps()),
            json_number(m.quantile_ms(0.50)),
            json_number(m.quantile_ms(0.90)),
            json_number(m.quantile_ms(0.99)),
            m.errors,
            json_mb(m.peak_rss_kib),
            m.server_us_per_call().map_or("null".to_string(), json_number),
        ));
    }

    fn per_core(&mut self, name: &str, m: &PerCore) {
        println!("{}", per_core_row(name, m));
        self.rows.push(format!(
            r#"{{"scenario":{},"requests":{},"rps":{},"mean_us":{},"errors":{},"peak_rss_mb":{}}}"#,
            json_string(name),
            m.verified,
            json_number(m.per_sec()),
            json_number(m.mean_us()),
            m.errors,
            json_mb(m.peak_rss_kib),
        ));
    }

    /// The whole run as one JSON object.
    fn json(&self, results: &Results, cores: usize) -> String {
        format!(
            r#"{{"cores":{cores},"idle_rss_mb":{},"peak_rss_mb":{},"scenarios":[{}]}}"#,
            json_mb(results.idle_rss_kib),
            json_mb(results.peak_rss_kib),
            self.rows.join(",")
        ) + "\n"
    }
}

fn row(name: &str, m: &Measured) -> String {
    let mut line = format!(
        "| {name:<28} | {:>9} | {:>9.0} | {:>7.2} | {:>7.2} | {:>7.2} | {:>6} |",
        m.latencies.len(),
        m.rps(),
        m.quantile_ms(0.50),
        m.quantile_ms(0.90),
        m.quantile_ms(0.99),
        m.errors,
    );
    match m.peak_rss_kib {
        Some(kib) => write!(line, " {:>6.1} MB |", kib as f64 / 1024.0).expect("write to a String"),
        None => line.push_str("      - |"),
    }
    match m.server_us_per_call() {
        Some(us) => write!(line, " {us:>14.1} |").expect("write to a String"),
        None => line.push_str("              - |"),
    }
    if let Some(error) = &m.first_error {
        write!(line, " first error: {error}").expect("write to a String");
    }
    line
}

/// What a `verify-*` scenario measured: in-process calls on one core, timed as a whole (a call
/// takes about a microsecond; timing each one would weigh on what is measured).
#[derive(Default)]
struct PerCore {
    /// Calls that verified.
    verified: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    /// The verifier's counters at the end (warm-up included).
    stats: authd_client::Stats,
    /// The server's largest resident set while it ran, in KiB.
    peak_rss_kib: Option<u64>,
}

impl PerCore {
    /// Successful calls per second on the one core.
    fn per_sec(&self) -> f64 {
        self.verified as f64 / self.window.as_secs_f64()
    }

    /// The mean time of a successful call, in microseconds.
    fn mean_us(&self) -> f64 {
        if self.verified == 0 {
            return f64::NAN;
        }
        self.window.as_secs_f64() * 1e6 / self.verified as f64
    }

    /// Whether more than 0.1% of the calls failed.
    fn too_many_errors(&self) -> bool {
        self.errors as f64 > 0.001 * (self.verified + self.errors) as f64
    }
}

/// A `verify-*` scenario in the table's columns: no latency quantiles (the calls are timed as a
/// whole), the mean per call after the row.
fn per_core_row(name: &str, m: &PerCore) -> String {
    let mut line = format!(
        "| {name:<28} | {:>9} | {:>9.0} | {:>7} | {:>7} | {:>7} | {:>6} |",
        m.verified,
        m.per_sec(),
        "-",
        "-",
        "-",
        m.errors,
    );
    match m.peak_rss_kib {
        Some(kib) => write!(line, " {:>6.1} MB |", kib as f64 / 1024.0).expect("write to a String"),
        None => line.push_str("      - |"),
    }
    line.push_str("              - |");
    write!(line, " mean {:.3} µs per call, one core", m.mean_us()).expect("write to a String");
    if m.stats.introspected > 0 {
        write!(
            line,
            " WARNING: {} calls went to Introspect over the network",
            m.stats.introspected
        )
        .expect("write to a String");
    }
    if let Some(error) = &m.first_error {
        write!(line, " first error: {error}").expect("write to a String");
    }
    line
}

/// Calls `verifier.verify` on `tokens` in turn, in a tight loop: `warmup` uncounted, then
/// `duration` counted. One task on a thread of its own (of the blocking pool), so that the loop,
/// which never yields, does not hold up the verifier's streams on the runtime's workers.
async fn verify_per_core(
    verifier: &authd_client::Verifier,
    tokens: Vec<String>,
    warmup: Duration,
    duration: Duration,
) -> PerCore {
    let runtime = tokio::runtime::Handle::current();
    let looping = verifier.clone();
    let mut measured =
        tokio::task::spawn_blocking(move || runtime.block_on(verify_loop(&looping, &tokens, warmup, duration)))
            .await
            .expect("the verify loop panicked");
    measured.stats = verifier.stats();
    measured
}

async fn verify_loop(
    verifier: &authd_client::Verifier,
    tokens: &[String],
    warmup: Duration,
    duration: Duration,
) -> PerCore {
    // The clock is read once per batch, not per call.
    const BATCH: usize = 32;
    let mut next = 0;
    let until = Instant::now() + warmup;
    while Instant::now() < until {
        for _ in 0..BATCH {
            // Uncounted, as the warm-up of the other scenarios.
            drop(verifier.verify(&tokens[next]).await);
            next = (next + 1) % tokens.len();
        }
    }
    let mut measured = PerCore::default();
    let from = Instant::now();
    let until = from + duration;
    loop {
        for _ in 0..BATCH {
            match verifier.verify(&tokens[next]).await {
                Ok(identity) => {
                    std::hint::black_box(identity);
                    measured.verified += 1;
                }
                Err(rejection) => {
                    measured.errors += 1;
                    measured.first_error.get_or_insert_with(|| rejection.to_string());
                }
            }
            next = (next + 1) % tokens.len();
        }
        if Instant::now() >= until {
            break;
        }
    }
    measured.window = from.elapsed();
    measured
}

/// Refreshes until `minted` holds `wanted` access tokens (for `scenario`).
async fn mint_for(
    scenario: Scenario,
    fixture: &Fixture,
    sessions: &mut [(String, String)],
    minted: Vec<String>,
    wanted: usize,
    memory: Option<&MemoryWatch>,
) -> anyhow::Result<Vec<String>> {
    if minted.len() >= wanted {
        return Ok(minted);
    }
    eprintln!(
        "minting {} more access tokens with Refresh for {}...",
        wanted - minted.len(),
        scenario.name()
    );
    let minted = mint(fixture, sessions, minted, wanted).await?;
    if let Some(memory) = memory {
        memory.take_peak();
    }
    Ok(minted)
}

/// Runs the scenarios and prints what they measured.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.duration <= 0.0 || args.warmup < 0.0 {
        bail!("--concurrency and --duration must be positive, --warmup not negative");
    }
    let target = match &args.target {
        Some(target) => target.clone(),
        None => std::env::var("AUTHD_GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into()),
    };
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = args.server_pid.map(MemoryWatch::start);
    if let Some(pid) = args.server_pid {
        let _ = SERVER_PID.set(pid);
    }
    let mut results = Results {
        idle_rss_kib: args.server_pid.and_then(resident_kib),
        ..Results::default()
    };

    let params = hashing::Argon2Params::from_env()?;
    println!(
        "authd bench: {target}, {cores} cores, {} connections, {} in flight, {:.0} s warm-up + {:.0} s per scenario",
        args.connections, args.concurrency, args.warmup, args.duration
    );
    if args.scenarios.contains(&Scenario::IntrospectDistinct) && args.distinct_tokens <= DEFAULT_TOKEN_CACHE_SIZE {
        eprintln!(
            "note: {} distinct tokens fit in a token cache of the default size ({DEFAULT_TOKEN_CACHE_SIZE}): \
             introspect-distinct will then mostly measure cache hits, not signature checks",
            args.distinct_tokens
        );
    }
    let fixture = Fixture::set_up(&args, &target).await?;
    let wants = |s: Scenario| args.scenarios.contains(&s);
    let token_users =
        if wants(Scenario::Refresh) || wants(Scenario::IntrospectDistinct) || wants(Scenario::VerifyDistinct) {
            args.concurrency
        } else {
            1
        };
    let token_accounts = fixture.register("t", token_users).await?;
    // (access token, latest refresh token) of one session per token user.
    let mut sessions = fixture.log_in(&token_accounts).await?;
    let login_accounts = if wants(Scenario::Login) || wants(Scenario::Mix) {
        Arc::new(
            fixture
                .register("l", args.concurrency.max(args.flood_concurrency))
                .await?,
        )
    } else {
        Arc::default()
    };
    if let Some(memory) = &memory {
        memory.take_peak();
    }
    println!();
    println!(
        "| scenario                     |  requests |     rps |  p50 ms |  p90 ms |  p99 ms | errors | server RSS | server µs/call |"
    );
    println!(
        "|------------------------------|-----------|---------|---------|---------|---------|--------|------------|----------------|"
    );
    let peak = |m: &mut Measured| {
        m.peak_rss_kib = memory.as_ref().and_then(MemoryWatch::take_peak);
        m.peak_rss_kib
    };
    let mut minted: Vec<String> = Vec::new();
    let mut report = Report::default();
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Health => {
                let calls = (0..args.concurrency)
                    .map(|i| HealthCall(HealthClient::new(fixture.channel(i))))
                    .collect();
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                results.health = Some(m.rps());
                report.measured(scenario.name(), &m);
            }
            Scenario::IntrospectRepeated => {
                let calls = fixture.introspect_calls(
                    args.concurrency,
                    &sessions[..1].iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
                );
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                results.repeated = Some(m.rps());
                report.measured(scenario.name(), &m);
            }
            Scenario::Check => {
                let calls = (0..args.concurrency)
                    .map(|i| CheckCall {
                        client: tonic::client::Grpc::new(fixture.channel(i)),
                        bearer: fixture.api_key.clone(),
                        request: check_request(&sessions[0].0),
                    })
                    .collect();
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                results.check = Some(m.rps());
                report.measured(scenario.name(), &m);
            }
            Scenario::Refresh => {
                let (mut m, calls) = closed_loop(refresh_calls(&fixture, &sessions), warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                for (session, call) in sessions.iter_mut().zip(calls) {
                    session.1 = call.refresh_token;
                    minted.extend(call.minted);
                }
                report.measured(scenario.name(), &m);
            }
            Scenario::IntrospectDistinct => {
                minted = mint_for(
                    *scenario,
                    &fixture,
                    &mut sessions,
                    minted,
                    args.distinct_tokens,
                    memory.as_ref(),
                )
                .await?;
                // Oldest first: every token is presented once before any comes round again.
                let calls = fixture.introspect_calls(args.concurrency, &minted);
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                results.distinct = Some(m.rps());
                let name = format!("introspect-distinct ({}k)", minted.len() / 1000);
                report.measured(&name, &m);
            }
            Scenario::Login => {
                // Timed right before and right after the logins, while the server is idle: this
                // machine's speed drifts, and the target compares the two.
                let before = time_hashes(params, cores)?;
                let calls = fixture.login_calls(args.concurrency, &login_accounts);
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                let hashing = before.and(time_hashes(params, cores)?);
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                results.login = Some((m.rps(), hashing));
                report.measured(scenario.name(), &m);
            }
            Scenario::Mix => {
                let rate = args
                    .mix_rate
                    .or(results.repeated.map(|rps| (rps / 2.0).round()))
                    .unwrap_or(1000.0);
                let tokens = [sessions[0].0.clone()];
                let alone = fixture.introspect_calls(args.concurrency, &tokens);
                let mut quiet = paced(alone, rate, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut quiet));
                report.measured(&format!("mix: introspect {rate:.0}/s alone"), &quiet);
                let during = fixture.introspect_calls(args.concurrency, &tokens);
                let flood = fixture.login_calls(args.flood_concurrency, &login_accounts);
                let (mut busy, (mut logins, _)) = tokio::join!(
                    paced(during, rate, warmup, duration),
                    closed_loop(flood, warmup, duration)
                );
                let flood_peak = peak(&mut busy);
                logins.peak_rss_kib = flood_peak;
                results.peak_rss_kib = results.peak_rss_kib.max(flood_peak);
                report.measured("mix: introspect, login flood", &busy);
                report.measured("mix: the login flood", &logins);
                results.mix = Some((quiet.quantile_ms(0.99), busy.quantile_ms(0.99)));
            }
            Scenario::ListUsers => {
                let calls = (0..args.concurrency)
                    .map(|i| ListUsersCall {
                        client: UserServiceClient::new(fixture.channel(i)),
                        bearer: fixture.admin_bearer.clone(),
                        query: format!("b{}", fixture.tag),
                    })
                    .collect();
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                report.measured(scenario.name(), &m);
            }
            Scenario::ListAudit | Scenario::ListAuditType => {
                let user_id = args.audit_user.clone().unwrap_or_else(|| fixture.admin_id.clone());
                let event_type = match scenario {
                    Scenario::ListAuditType => "login.failed".to_string(),
                    _ => String::new(),
                };
                let calls = (0..args.concurrency)
                    .map(|i| ListAuditCall {
                        client: AuditServiceClient::new(fixture.channel(i)),
                        bearer: fixture.admin_bearer.clone(),
                        user_id: user_id.clone(),
                        event_type: event_type.clone(),
                        page_token: String::new(),
                        pages: 0,
                    })
                    .collect();
                let (mut m, _) = closed_loop(calls, warmup, duration).await;
                results.peak_rss_kib = results.peak_rss_kib.max(peak(&mut m));
                report.measured(scenario.name(), &m);
            }
            Scenario::VerifyHot | Scenario::VerifyDistinct => {
                let hot = *scenario == Scenario::VerifyHot;
                let (tokens, cache, name) = if hot {
                    // The token of introspect-repeated, the verified-token cache as by default.
                    (
                        vec![sessions[0].0.clone()],
                        DEFAULT_TOKEN_CACHE_SIZE,
                        scenario.name().to_string(),
                    )
                } else {
                    minted = mint_for(
                        *scenario,
                        &fixture,
                        &mut sessions,
                        minted,
                        args.distinct_tokens,
                        memory.as_ref(),
                    )
                    .await?;
                    // No cache: every call checks a signature.
                    (minted.clone(), 0, format!("verify-distinct ({}k)", minted.len() / 1000))
                };
                // Made for this scenario only, and dropped (its streams closed) at its end.
                let verifier = match fixture.verifier(cache).await {
                    Ok(verifier) => verifier,
                    Err(e) => {
                        fixture.tear_down().await;
                        return Err(e);
                    }
                };
                let mut m = verify_per_core(&verifier, tokens, warmup, duration).await;
                drop(verifier);
                m.peak_rss_kib = memory.as_ref().and_then(MemoryWatch::take_peak);
                results.peak_rss_kib = results.peak_rss_kib.max(m.peak_rss_kib);
                report.per_core(&name, &m);
                if m.stats.introspected > 0 {
                    eprintln!(
                        "warning: {}: {} of the verifier's calls went to Introspect over the network \
                         ({} fallbacks, {} unavailable; its view current: {}): the figure includes network calls, \
                         it is not in-process verification alone",
                        scenario.name(),
                        m.stats.introspected,
                        m.stats.fallbacks,
                        m.stats.unavailable,
                        m.stats.view_current
                    );
                }
                if m.too_many_errors() {
                    fixture.tear_down().await;
                    bail!(
                        "{}: {} of {} calls failed (more than 0.1%); the first: {}",
                        scenario.name(),
                        m.errors,
                        m.verified + m.errors,
                        m.first_error.as_deref().unwrap_or("?")
                    );
                }
                let figures = Some((m.per_sec(), m.mean_us()));
                if hot {
                    results.verify_hot = figures;
                } else {
                    results.verify_distinct = figures;
                }
            }
        }
    }
    fixture.tear_down().await;
    print_targets(&results, cores);
    if let Some(path) = &args.json {
        std::fs::write(path, report.json(&results, cores)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn refresh_calls(fixture: &Fixture, sessions: &[(String, String)]) -> Vec<RefreshCall> {
    sessions
        .iter()
        .enumerate()
        .map(|(i, (_, refresh_token))| RefreshCall {
            client: AuthServiceClient::new(fixture.channel(i)),
            refresh_token: refresh_token.clone(),
            minted: Vec::new(),
        })
        .collect()
}

/// Refreshes until `have` holds `wanted` access tokens, carrying each session's chain on from its
/// latest refresh token (presenting a spent one would end the session, as reuse).
async fn mint(
    fixture: &Fixture,
    sessions: &mut [(String, String)],
    mut have: Vec<String>,
    wanted: usize,
) -> anyhow::Result<Vec<String>> {
    let per_chain = (wanted - have.len()).div_ceil(sessions.len());
    let chains = refresh_calls(fixture, sessions).into_iter().map(|mut call| async move {
        for _ in 0..per_chain {
            call.call()
                .await
                .map_err(|e| anyhow::anyhow!("minting tokens with Refresh: {e}"))?;
        }
        Ok::<_, anyhow::Error>((call.refresh_token, call.minted))
    });
    // Interleave the chains so that consecutive tokens belong to different sessions.
    let mut minted = Vec::new();
    for (session, chain) in sessions.iter_mut().zip(futures_join_all(chains).await) {
        let (latest, tokens) = chain?;
        session.1 = latest;
        minted.push(tokens);
    }
    for i in 0..per_chain {
        have.extend(minted.iter().filter_map(|chain| chain.get(i).cloned()));
    }
    have.truncate(wanted);
    Ok(have)
}

/// One argon2id hash at the server's parameters (AUTHD_ARGON2_*): alone, and with one per core
/// running at once (they then share the caches and the memory bandwidth).
fn time_hashes(params: hashing::Argon2Params, cores: usize) -> anyhow::Result<Hashing> {
    let (alone, together) = hashing::time_alone_and_together(params, cores, 7)?;
    Ok(Hashing {
        params,
        alone_each: vec![alone],
        together_each: vec![together],
    })
}

fn print_targets(results: &Results, cores: usize) {
    println!();
    println!("| target | goal | measured | |");
    println!("|---|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
    if let (Some(health), Some(repeated)) = (results.health, results.repeated) {
        let ratio = repeated / health;
        println!(
            "| Introspect, repeated token | ≥ 0.80 × health | {ratio:.3} × ({repeated:.0} / {health:.0} rps) | {} |",
            verdict(ratio >= 0.8)
        );
    }
    if let (Some(health), Some(check)) = (results.health, results.check) {
        let ratio = check / health;
        println!(
            "| Check, repeated token | ≥ 0.80 × health | {ratio:.3} × ({check:.0} / {health:.0} rps) | {} |",
            verdict(ratio >= 0.8)
        );
    }
    if let (Some(health), Some(distinct)) = (results.health, results.distinct) {
        let ratio = distinct / health;
        println!(
            "| Introspect, distinct tokens | ≥ 0.40 × health | {ratio:.3} × ({distinct:.0} / {health:.0} rps) | {} |",
            verdict(ratio >= 0.40)
        );
    }
    if let Some((login, hashing)) = &results.login {
        let p = &hashing.params;
        let goal = 0.85 * cores as f64 / hashing.alone().as_secs_f64();
        println!(
            "| Login | ≥ 0.85 × {cores} cores ÷ {:.1} ms (one hash, m={} KiB, t={}, p={}; timed before and after: {}) = {goal:.1}/s | {login:.1}/s | {} |",
            hashing.alone().as_secs_f64() * 1000.0,
            p.memory_kib,
            p.iterations,
            p.parallelism,
            hashing
                .alone_each
                .iter()
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(" and "),
            verdict(*login >= goal)
        );
        let ceiling = cores as f64 / hashing.together().as_secs_f64();
        println!(
            "| (Login, against hashes run {cores} at once) | {cores} cores ÷ {:.1} ms = {ceiling:.1}/s | {:.2} × that | context |",
            hashing.together().as_secs_f64() * 1000.0,
            login / ceiling
        );
    }
    if let Some((quiet, busy)) = results.mix {
        let ratio = busy / quiet;
        println!(
            "| Introspect p99 during a login flood | ≤ 2 × p99 without | {ratio:.2} × ({busy:.2} ms / {quiet:.2} ms) | {} |",
            verdict(ratio <= 2.0)
        );
    }
    if let Some(idle) = results.idle_rss_kib {
        let mb = idle as f64 / 1024.0;
        println!(
            "| Resident memory, idle | < 50 MB | {mb:.1} MB | {} |",
            verdict(mb < 50.0)
        );
    }
    if let Some(peak) = results.peak_rss_kib {
        let mb = peak as f64 / 1024.0;
        println!(
            "| Resident memory, under load | < 150 MB | {mb:.1} MB (largest sample) | {} |",
            verdict(mb < 150.0)
        );
    }
    // In-process verification (authd_client::Verifier), one core: after the table.
    let mut verify_lines = Vec::new();
    if let Some((_, mean_us)) = results.verify_hot {
        verify_lines.push(format!(
            "verify of a hot token: {mean_us:.3} µs (goal < 2 µs) — {}",
            verdict(mean_us < 2.0)
        ));
    }
    if let (Some((per_sec, _)), Some(distinct)) = (results.verify_distinct, results.distinct) {
        verify_lines.push(format!(
            "verify of distinct tokens: {per_sec:.0}/s per core vs introspect-distinct {distinct:.0}/s over loopback"
        ));
    }
    if let (Some((per_sec, _)), Some(repeated)) = (results.verify_hot, results.repeated) {
        verify_lines.push(format!("verify-hot vs introspect-repeated: {:.1}x", per_sec / repeated));
    }
    if !verify_lines.is_empty() {
        println!();
        for line in verify_lines {
            println!("{line}");
        }
    }
}
