//! OpenTelemetry from a real `authd serve`, received by the collector of `otlp.rs`: one server span
//! per RPC in the caller's trace with the stable RPC attributes, the call's work as child spans,
//! `rpc.server.call.duration` over OTLP and on `/metrics`, no secret or identifier anywhere in
//! it, and a collector that is gone or hangs costs calls nothing.

use crate::cluster::{Replica, deployment_env, free_port, p99};
use crate::helpers::*;
use crate::otlp::{Collector, ExportedSpan, PointValue, str_attribute};
use authd::proto::*;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::{Code, Request};

const LOGIN: &str = "auth.v1.AuthService/Login";
/// How long exported telemetry may take to arrive (spans go every 100 ms, metrics every 500 ms).
const ARRIVAL: Duration = Duration::from_secs(15);
/// The codes a server span counts as errors (`error.type` and the ERROR status).
const SERVER_ERRORS: &[Code] = &[
    Code::Unknown,
    Code::DeadlineExceeded,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
];

/// A fresh database and a replica on it exporting to `endpoint`, with `extra` settings; and the
/// database's name.
async fn replica_exporting_to(endpoint: &str, extra: &[(&str, &str)]) -> (Replica, String) {
    let (database, url) = fresh_database().await;
    let mut env = deployment_env(&url, None);
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test,team=identity",
        ),
    ]
    .iter()
    .chain(extra)
    {
        env.push((name.to_string(), value.to_string()));
    }
    (Replica::start(&env).await, database)
}

/// The caller's side of a W3C trace context.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    fn new() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            span_id: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
        }
    }

    /// `message` with this caller's `traceparent`.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let traceparent = format!("00-{}-{}-01", self.trace_id, self.span_id);
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        request
    }

    /// The server span that continues this caller's trace, once it has arrived.
    fn server_span(&self, collector: &Collector) -> Option<ExportedSpan> {
        collector
            .trace(&self.trace_id)
            .into_iter()
            .find(|s| s.kind() == SpanKind::Server && s.parent_span_id() == self.span_id)
    }
}

/// Registers `name` and logs in as them, in a trace of a new caller's; the caller.
async fn registered_and_logged_in(replica: &Replica, name: &str) -> Caller {
    replica.register(name).await;
    let caller = Caller::new();
    replica
        .auth()
        .login(caller.request(login_request(name, PASSWORD)))
        .await
        .expect("login");
    caller
}

fn login_request(identifier: &str, password: &str) -> LoginRequest {
    LoginRequest {
        identifier: identifier.into(),
        password: password.into(),
        device_name: None,
    }
}

/// A gRPC code by its canonical name, as `rpc.response.status_code` and `error.type` carry it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A server span of a call to `method` (fully qualified) on `replica` that ended with `code`,
/// by the stable RPC conventions.
fn assert_server_span(span: &ExportedSpan, method: &str, code: Code, replica: &Replica) {
    let seen = span.describe();
    assert_eq!(span.kind(), SpanKind::Server, "{seen}");
    assert_eq!(span.name(), method, "{seen}");
    assert_eq!(span.str("rpc.method"), Some(method), "{seen}");
    assert_eq!(span.attribute("rpc.method_original"), None, "{seen}");
    assert_outcome(span, code, replica);
}

/// What every server span carries, and how it tells the outcome `code`.
fn assert_outcome(span: &ExportedSpan, code: Code, replica: &Replica) {
    let seen = span.describe();
    assert_eq!(span.str("rpc.system.name"), Some("grpc"), "{seen}");
    assert_eq!(span.str("rpc.response.status_code"), Some(code_name(code)), "{seen}");
    assert_eq!(span.str("server.address"), Some("127.0.0.1"), "{seen}");
    assert_eq!(span.int("server.port"), Some(i64::from(replica.addr.port())), "{seen}");
    assert_eq!(span.str("client.address"), Some("127.0.0.1"), "{seen}");
    if SERVER_ERRORS.contains(&code) {
        assert_eq!(span.str("error.type"), Some(code_name(code)), "{seen}");
        assert_eq!(span.status(), StatusCode::Error, "{seen}");
    } else {
        assert_eq!(span.attribute("error.type"), None, "{seen}");
        assert_ne!(span.status(), StatusCode::Error, "{seen}");
    }
}

/// The spans of `trace` below `root`, at any depth.
fn descendants(trace: &[ExportedSpan], root: &ExportedSpan) -> Vec<ExportedSpan> {
    let by_id: HashMap<String, &ExportedSpan> = trace.iter().map(|s| (s.span_id(), s)).collect();
    let below_root = |span: &ExportedSpan| {
        let mut parent = span.parent_span_id();
        for _ in 0..64 {
            if parent == root.span_id() {
                return true;
            }
            match by_id.get(&parent) {
                Some(up) => parent = up.parent_span_id(),
                None => return false,
            }
        }
        false
    };
    trace.iter().filter(|s| below_root(s)).cloned().collect()
}

fn dump(spans: &[ExportedSpan]) -> String {
    spans.iter().map(|s| format!("\n  {}", s.describe())).collect()
}

/// Polls `check` until it holds or `within` has passed; whether it held.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Makes Postgres refuse connections to `database` and ends those it has.
async fn refuse_connections(database: &str) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut admin = diesel_async::AsyncPgConnection::establish(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid();"
        ))
        .await
        .unwrap();
}

async fn allow_connections(database: &str) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut admin = diesel_async::AsyncPgConnection::establish(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_login_is_a_server_span_in_the_callers_trace() {
    let collector = Collector::start_grpc().await;
    let (replica, database) = replica_exporting_to(&collector.endpoint(), &[]).await;
    replica.register("ada").await;

    let good = Caller::new();
    replica
        .auth()
        .login(good.request(login_request("ada", PASSWORD)))
        .await
        .expect("login");
    let wrong = Caller::new();
    let refused = replica
        .auth()
        .login(wrong.request(login_request("ada", "not the password at all")))
        .await
        .expect_err("a wrong password");
    assert_eq!(refused.code(), Code::Unauthenticated);

    collector
        .wait_for(ARRIVAL, |c| {
            good.server_span(c).is_some() && wrong.server_span(c).is_some()
        })
        .await;
    let login = good.server_span(&collector).unwrap();
    assert_server_span(&login, LOGIN, Code::Ok, &replica);
    assert_eq!(login.trace_id(), good.trace_id);
    assert_eq!(login.parent_span_id(), good.span_id);
    let failed = wrong.server_span(&collector).unwrap();
    assert_server_span(&failed, LOGIN, Code::Unauthenticated, &replica);

    // The work of the login, below its server span: the queries and the password hash. A
    // statement's span ends with the statement, within the call (statements sent at once
    // included: the session's row and its audit event go out together).
    let children = |c: &Collector| descendants(&c.trace(&good.trace_id), &login);
    let statement = |spans: &[ExportedSpan], name: &str| {
        spans.iter().any(|s| {
            s.name() == name
                && s.str("db.system.name") == Some("postgresql")
                && s.kind() == SpanKind::Client
                && s.span.end_time_unix_nano <= login.span.end_time_unix_nano
        })
    };
    let has_all = |spans: &[ExportedSpan]| {
        statement(spans, "UPDATE users")
            && statement(spans, "INSERT sessions")
            && statement(spans, "INSERT audit_events")
            && spans.iter().any(|s| s.name() == "password_hash")
            && spans.iter().any(|s| s.name() == "password_hash.wait")
    };
    let arrived = eventually(ARRIVAL, || has_all(&children(&collector))).await;
    assert!(
        arrived,
        "the login's trace lacks its statements' CLIENT spans ended within the call, password_hash or \
         password_hash.wait below its server span:{}",
        dump(&collector.trace(&good.trace_id))
    );

    // Every batch names the service and carries OTEL_RESOURCE_ATTRIBUTES.
    for span in collector.spans() {
        let resource = (
            span.resource_str("service.name"),
            span.resource_str("deployment.environment.name"),
            span.resource_str("team"),
        );
        assert_eq!(
            resource,
            (Some("authd"), Some("test"), Some("identity")),
            "{}",
            span.describe()
        );
    }

    // A failure of authd's own (its database refuses it) is an error of the span.
    refuse_connections(&database).await;
    let mut attempts = Vec::new();
    for _ in 0..30 {
        let caller = Caller::new();
        let code = match replica
            .auth()
            .login(caller.request(login_request("ada", PASSWORD)))
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        attempts.push((caller, code));
        if code == Code::Unavailable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    allow_connections(&database).await;
    let codes: Vec<Code> = attempts.iter().map(|(_, code)| *code).collect();
    assert_eq!(codes.last(), Some(&Code::Unavailable), "{codes:?}");
    collector
        .wait_for(ARRIVAL, |c| {
            attempts.iter().all(|(caller, _)| caller.server_span(c).is_some())
        })
        .await;
    for (caller, code) in &attempts {
        assert_server_span(&caller.server_span(&collector).unwrap(), LOGIN, *code, &replica);
    }
}

/// The caller's decision holds: a trace it did not sample (`-00`) is not exported; one it
/// sampled keeps its `tracestate`, and the server span is flagged as continuing a remote parent.
#[tokio::test]
async fn the_callers_sampling_and_tracestate_are_followed() {
    let collector = Collector::start_grpc().await;
    let (replica, _) = replica_exporting_to(&collector.endpoint(), &[]).await;
    replica.register("sampling").await;
    let unsampled = Caller::new();
    let mut request = Request::new(login_request("sampling", PASSWORD));
    let traceparent = format!("00-{}-{}-00", unsampled.trace_id, unsampled.span_id);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    replica.auth().login(request).await.expect("login");
    let sampled = Caller::new();
    let mut request = sampled.request(login_request("sampling", PASSWORD));
    request
        .metadata_mut()
        .insert("tracestate", "vendor=abc,other=x".parse().unwrap());
    replica.auth().login(request).await.expect("login");

    collector.wait_for(ARRIVAL, |c| sampled.server_span(c).is_some()).await;
    let login = sampled.server_span(&collector).unwrap();
    assert_server_span(&login, LOGIN, Code::Ok, &replica);
    assert_eq!(login.span.trace_state, "vendor=abc,other=x", "{}", login.describe());
    // Sampled, and the parent's remoteness known and true (OTLP's span flags).
    assert_eq!(login.span.flags, 0x301, "{}", login.describe());
    let children = |c: &Collector| descendants(&c.trace(&sampled.trace_id), &login);
    assert!(
        eventually(ARRIVAL, || children(&collector)
            .iter()
            .any(|s| s.name() == "password_hash"))
        .await,
        "the sampled login's children:{}",
        dump(&collector.trace(&sampled.trace_id))
    );
    // The unsampled login ended before the sampled one began; nothing of it was sent.
    assert!(
        collector.trace(&unsampled.trace_id).is_empty(),
        "an unsampled trace was exported:{}",
        dump(&collector.trace(&unsampled.trace_id))
    );
}

#[tokio::test]
async fn a_method_authd_does_not_know_is_other() {
    let collector = Collector::start_grpc().await;
    let (replica, _) = replica_exporting_to(&collector.endpoint(), &[]).await;

    let caller = Caller::new();
    let mut grpc = tonic::client::Grpc::new(replica.channel.clone());
    grpc.ready().await.unwrap();
    let answer: Result<tonic::Response<()>, tonic::Status> = grpc
        .unary(
            caller.request(()),
            http::uri::PathAndQuery::from_static("/auth.v1.AuthService/NoSuchMethod"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert_eq!(answer.expect_err("no such method").code(), Code::Unimplemented);

    collector.wait_for(ARRIVAL, |c| caller.server_span(c).is_some()).await;
    let span = caller.server_span(&collector).unwrap();
    let seen = span.describe();
    assert_eq!(span.kind(), SpanKind::Server, "{seen}");
    // The method's name is the caller's to choose: never a span name or metric attribute.
    assert_eq!(span.str("rpc.method"), Some("_OTHER"), "{seen}");
    assert_eq!(
        span.str("rpc.method_original"),
        Some("auth.v1.AuthService/NoSuchMethod"),
        "{seen}"
    );
    // Semantic conventions: "If rpc.method is _OTHER, the span name SHOULD be {rpc.system.name}".
    assert_eq!(span.name(), "grpc", "{seen}");
    assert_outcome(&span, Code::Unimplemented, &replica);

    collector
        .wait_for(ARRIVAL, |c| {
            c.metric("rpc.server.call.duration")
                .iter()
                .any(|p| p.str("rpc.method") == Some("_OTHER"))
        })
        .await;
    for point in collector.metric("rpc.server.call.duration") {
        assert_eq!(point.str("rpc.method_original"), None, "{}", point.describe());
        assert_ne!(point.str("rpc.method"), Some("auth.v1.AuthService/NoSuchMethod"));
    }
}

/// `/metrics`, parsed as Prometheus text.
async fn scrape(replica: &Replica) -> (String, prometheus_parse::Scrape) {
    let answer = http_request(replica.http, "GET", "/metrics", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = if answer
        .headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(&answer.body)
    } else {
        answer.body
    };
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    (body, parsed)
}

/// An HTTP/1.1 chunked body, joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The scrape has the call-duration histogram with a Login that succeeded, and `authd_up`.
fn assert_scrape_has_a_login(body: &str, scrape: &prometheus_parse::Scrape) {
    let login = scrape.samples.iter().find(|s| {
        s.metric == "rpc_server_call_duration_seconds"
            && matches!(s.value, prometheus_parse::Value::Histogram(_))
            && s.labels.get("rpc_method") == Some(LOGIN)
            && s.labels.get("rpc_response_status_code") == Some("OK")
    });
    assert!(
        login.is_some(),
        "no rpc_server_call_duration_seconds histogram for a Login that succeeded in:\n{body}"
    );
    let up = scrape.samples.iter().find(|s| s.metric == "authd_up").map(|s| &s.value);
    assert_eq!(up, Some(&prometheus_parse::Value::Gauge(1.0)), "{body}");
}

#[tokio::test]
async fn metrics_reach_the_collector_and_the_scrape_endpoint() {
    let collector = Collector::start_grpc().await;
    let (replica, database) = replica_exporting_to(&collector.endpoint(), &[]).await;
    replica.user("bea").await;
    let refused = replica
        .auth()
        .login(login_request("bea", "not the password at all"))
        .await;
    assert_eq!(refused.expect_err("a wrong password").code(), Code::Unauthenticated);

    let login_ended = |c: &Collector, code: &str| {
        c.metric("rpc.server.call.duration")
            .iter()
            .any(|p| p.str("rpc.method") == Some(LOGIN) && p.str("rpc.response.status_code") == Some(code))
    };
    collector
        .wait_for(ARRIVAL, |c| login_ended(c, "OK") && login_ended(c, "UNAUTHENTICATED"))
        .await;
    for point in collector.metric("rpc.server.call.duration") {
        let seen = point.describe();
        assert_eq!(point.unit, "s", "{seen}");
        assert!(
            matches!(point.value, PointValue::Histogram { count, .. } if count >= 1),
            "{seen}"
        );
        assert!(point.str("rpc.method").is_some(), "{seen}");
        assert!(point.str("rpc.response.status_code").is_some(), "{seen}");
        assert_eq!(str_attribute(&point.resource, "service.name"), Some("authd"), "{seen}");
    }

    let (body, parsed) = scrape(&replica).await;
    assert_scrape_has_a_login(&body, &parsed);

    // Without any collector configured, the scrape endpoint has the histogram all the same.
    let quiet = Replica::start(&deployment_env(&database_url(&database), None)).await;
    quiet.login("bea", PASSWORD).await;
    let (body, parsed) = scrape(&quiet).await;
    assert_scrape_has_a_login(&body, &parsed);
}

/// `value` in its forms a careless exporter could write: as text, and a UUID also without hyphens
/// and as its 16 bytes.
fn forms(what: &str, value: &str) -> Vec<(String, Vec<u8>)> {
    assert!(value.len() >= 8, "{what} is too short to search for: {value:?}");
    let mut forms = vec![(what.to_string(), value.as_bytes().to_vec())];
    if let Ok(id) = uuid::Uuid::parse_str(value) {
        forms.push((format!("{what} (simple)"), id.simple().to_string().into_bytes()));
        forms.push((format!("{what} (hyphenated)"), id.hyphenated().to_string().into_bytes()));
        forms.push((format!("{what} (bytes)"), id.as_bytes().to_vec()));
    }
    forms
}

/// What of `secrets` appears in `haystack`.
fn found_in(haystack: &[u8], secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, needle)| haystack.windows(needle.len()).any(|w| w == needle.as_slice()))
        .map(|(what, _)| what.clone())
        .collect()
}

#[tokio::test]
async fn exported_telemetry_holds_no_secret() {
    let collector = Collector::start_grpc().await;
    let (replica, _) = replica_exporting_to(&collector.endpoint(), &[]).await;
    let admin = replica.admin().await;
    let introspector = replica.api_key(&admin.access_token, &["tokens:introspect"]).await;

    let name = format!("hedy-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let user = replica.register(&name).await;
    let first = replica.login(&name, PASSWORD).await;
    let refreshed = replica
        .auth()
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .unwrap();
    let introspection = replica.introspect(&introspector, &refreshed.access_token).await;
    assert!(introspection.active);
    let created = replica
        .api_keys()
        .create_api_key(bearer(
            CreateApiKeyRequest {
                label: "telemetry".into(),
                scopes: vec!["tasks:read".into()],
                expires_at: None,
            },
            &refreshed.access_token,
        ))
        .await
        .expect("create an API key")
        .into_inner();
    let key = created.api_key.unwrap();
    assert!(replica.is_active(&introspector, &created.secret).await);
    replica
        .auth()
        .logout(bearer(LogoutRequest::default(), &refreshed.access_token))
        .await
        .expect("logout");

    let methods = [
        "auth.v1.AuthService/Register",
        LOGIN,
        "auth.v1.AuthService/Refresh",
        "auth.v1.TokenService/Introspect",
        "auth.v1.ApiKeyService/CreateApiKey",
        "auth.v1.AuthService/Logout",
    ];
    collector
        .wait_for(ARRIVAL, |c| {
            let spans = c.spans();
            let points = c.metric("rpc.server.call.duration");
            methods.iter().all(|m| {
                spans.iter().any(|s| s.str("rpc.method") == Some(m))
                    && points.iter().any(|p| p.str("rpc.method") == Some(m))
            })
        })
        .await;

    let jwt_parts = |what: &str, token: &str| {
        let mut parts = forms(what, token);
        let segments: Vec<&str> = token.split('.').collect();
        assert_eq!(segments.len(), 3, "{what} is a JWT");
        parts.extend(forms(&format!("{what} claims"), segments[1]));
        parts.extend(forms(&format!("{what} signature"), segments[2]));
        parts
    };
    let (key_prefix, key_secret) = created.secret.split_at(key.prefix.len());
    let mut secrets = Vec::new();
    secrets.extend(forms("the password", PASSWORD));
    secrets.extend(forms("the admin's password", ADMIN_PASSWORD));
    secrets.extend(forms("the admin's email", ADMIN_EMAIL));
    secrets.extend(jwt_parts("the admin's access token", &admin.access_token));
    secrets.extend(forms("the admin's refresh token", &admin.refresh_token));
    secrets.extend(forms("the introspector's API key", &introspector));
    secrets.extend(jwt_parts("the first access token", &first.access_token));
    secrets.extend(forms("the first refresh token", &first.refresh_token));
    secrets.extend(jwt_parts("the refreshed access token", &refreshed.access_token));
    secrets.extend(forms("the refreshed refresh token", &refreshed.refresh_token));
    secrets.extend(forms("the API key", &created.secret));
    secrets.extend(forms("the API key's secret part", key_secret.trim_start_matches('_')));
    secrets.extend(forms("the API key's prefix", key_prefix));
    secrets.extend(forms("the API key's id", &key.id));
    secrets.extend(forms("the email", &user.email));
    secrets.extend(forms("the username", &name));
    secrets.extend(forms("the user id", &user.id));
    secrets.extend(forms("the session id", &first.session_id));
    secrets.extend(forms("the introspected sid", &introspection.sid));
    secrets.extend(forms("the introspected jti", &introspection.jti));
    assert_eq!(key_prefix, key.prefix);
    assert_eq!(introspection.sub, user.id);

    let exported = collector.raw_bytes();
    assert!(exported.len() > 1000, "{} bytes exported", exported.len());
    assert_eq!(
        found_in(&exported, &secrets),
        Vec::<String>::new(),
        "in what was exported"
    );
    let (body, _) = scrape(&replica).await;
    assert_eq!(found_in(body.as_bytes(), &secrets), Vec::<String>::new(), "on /metrics");
}

#[tokio::test]
async fn spans_travel_over_http_protobuf_too() {
    let collector = Collector::start_http().await;
    let (replica, _) = replica_exporting_to(
        &collector.endpoint(),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "authd-over-http"),
        ],
    )
    .await;
    let caller = registered_and_logged_in(&replica, "cyd").await;

    collector.wait_for(ARRIVAL, |c| caller.server_span(c).is_some()).await;
    let login = caller.server_span(&collector).unwrap();
    assert_server_span(&login, LOGIN, Code::Ok, &replica);
    assert_eq!(
        login.resource_str("service.name"),
        Some("authd-over-http"),
        "{}",
        login.describe()
    );
    assert_eq!(login.resource_str("team"), Some("identity"));

    collector
        .wait_for(ARRIVAL, |c| {
            c.metric("rpc.server.call.duration")
                .iter()
                .any(|p| p.str("rpc.method") == Some(LOGIN))
        })
        .await;
}

/// A TCP port that accepts connections and never answers on them; it closes when dropped.
struct BlackHole {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn open() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self { port, accepted, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spans wait for a full batch or the schedule delay; a replica told to stop sends what waits.
#[tokio::test]
async fn spans_waiting_at_shutdown_are_sent() {
    let collector = Collector::start_grpc().await;
    let (mut replica, _) = replica_exporting_to(
        &collector.endpoint(),
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000"), ("OTEL_METRICS_EXPORTER", "none")],
    )
    .await;
    let caller = registered_and_logged_in(&replica, "last_words").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        collector.spans().is_empty(),
        "spans left before their batch was full or due:{}",
        dump(&collector.spans())
    );

    replica.signal("TERM");
    assert!(replica.exit_status(Duration::from_secs(15)).await.success());
    let login = caller
        .server_span(&collector)
        .expect("the login's span, sent at shutdown");
    assert_server_span(&login, LOGIN, Code::Ok, &replica);
    let trace = collector.trace(&caller.trace_id);
    assert!(
        trace.iter().any(|s| s.name() == "password_hash"),
        "its child spans too:{}",
        dump(&trace)
    );
}

#[tokio::test]
async fn a_dead_collector_costs_calls_nothing() {
    let hole = BlackHole::open().await;
    let nobody = free_port();
    for protocol in ["grpc", "http/protobuf"] {
        for (dead, port) in [("nobody listens", nobody), ("a black hole", hole.port)] {
            let what = format!("OTLP {protocol} to {dead}");
            let endpoint = format!("http://127.0.0.1:{port}");
            let (replica, _) = replica_exporting_to(&endpoint, &[("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)]).await;
            let introspector = replica.introspector().await;
            let tokens = replica.user("dee").await;
            // Exports are under way (or hanging) before the calls that count.
            tokio::time::sleep(Duration::from_secs(1)).await;

            let mut samples = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                let answer = replica.introspect(&introspector, &tokens.access_token).await;
                samples.push(started.elapsed());
                assert!(answer.active, "{what}");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let p99 = p99(samples);
            eprintln!("{what}: Introspect p99 {p99:?}");
            assert!(p99 < Duration::from_millis(250), "{what}: Introspect p99 {p99:?}");
            assert_eq!(
                replica.health().await.ok(),
                Some(tonic_health::pb::health_check_response::ServingStatus::Serving),
                "{what}"
            );
        }
    }
    assert!(
        hole.accepted.load(Ordering::SeqCst) >= 2,
        "the exporters never reached the black hole"
    );
}

/// A replica told to stop while its export hangs on a collector that never answers stops within
/// its shutdown budget, cleanly: exit status 0 and no panic in its log.
#[tokio::test]
async fn a_hanging_export_does_not_spoil_shutdown() {
    let hole = BlackHole::open().await;
    let endpoint = format!("http://127.0.0.1:{}", hole.port);
    let (mut replica, _) = replica_exporting_to(&endpoint, &[("OTEL_METRICS_EXPORTER", "none")]).await;
    replica.user("hung").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no export reached the black hole");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.user("hung_more").await;
    replica.signal("TERM");
    let status = replica.exit_status(Duration::from_secs(20)).await;
    let log = replica.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A log line written during a call carries the call's trace id; a call cut off before its
/// answer (the client's deadline) is measured as CANCELLED and leaves the in-flight count at 0.
#[tokio::test]
async fn log_lines_carry_the_trace_and_cut_off_calls_are_counted() {
    let collector = Collector::start_grpc().await;
    let (replica, _) = replica_exporting_to(&collector.endpoint(), &[("AUTHD_LOG_FORMAT", "json")]).await;
    let user = replica.register("traced_logs").await;
    let tokens = replica.login(&user.email, PASSWORD).await;
    replica
        .auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("the first refresh");
    // Presenting the spent refresh token again is a replay: authd logs a warning in the call.
    let caller = Caller::new();
    let replay = replica
        .auth()
        .refresh(caller.request(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        }))
        .await
        .expect_err("a replayed refresh token is refused");
    assert_eq!(replay.code(), Code::Unauthenticated);
    let logged = eventually(ARRIVAL, || {
        replica
            .log()
            .lines()
            .any(|line| line.contains("refresh token replayed") && line.contains(&caller.trace_id))
    })
    .await;
    assert!(
        logged,
        "no replay warning with trace id {}:\n{}",
        caller.trace_id,
        replica.log()
    );
    assert!(
        eventually(ARRIVAL, || caller.server_span(&collector).is_some()).await,
        "no Refresh span"
    );
    let span = caller.server_span(&collector).unwrap();
    let line = replica
        .log()
        .lines()
        .find(|line| line.contains("refresh token replayed"))
        .unwrap()
        .to_string();
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert!(
        json["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "rpc")),
        "no rpc span in {line}"
    );
    assert_eq!(json["trace_id"], caller.trace_id.as_str(), "{line}");
    assert_eq!(json["span_id"], span.span_id().as_str(), "{line}");

    // A Login the client gives 1 ms: the server drops the call before it answers.
    let mut hurried = Request::new(login_request(&user.email, PASSWORD));
    hurried.set_timeout(Duration::from_millis(1));
    let cut = replica
        .auth()
        .login(hurried)
        .await
        .expect_err("1 ms is too short for a login");
    assert!(
        matches!(cut.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{cut:?}"
    );
    let mut last = String::new();
    let counted = async {
        for _ in 0..100 {
            let (body, _) = scrape(&replica).await;
            let cancelled = body.lines().any(|l| {
                l.starts_with("rpc_server_call_duration_seconds_count")
                    && l.contains(&format!("rpc_method=\"{LOGIN}\""))
                    && l.contains("rpc_response_status_code=\"CANCELLED\"")
            });
            let idle = body.lines().any(|l| {
                l.starts_with("authd_rpc_server_active_calls")
                    && l.contains(&format!("rpc_method=\"{LOGIN}\""))
                    && l.trim_end().ends_with(" 0")
            });
            if cancelled && idle {
                return true;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    .await;
    assert!(
        counted,
        "the cut-off Login is not counted as CANCELLED with 0 in flight:\n{last}"
    );
}
