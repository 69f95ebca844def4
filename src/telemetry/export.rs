//! The OTLP exporters, and what a collector that is gone costs: a warning now and then.
//! Metrics go through `opentelemetry-otlp`. Spans go through [`super::batch`], which writes the
//! OTLP requests itself, and [`Transport`], which sends them over gRPC or HTTP.

use crate::config::OtlpProtocol;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A failed export is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// OTLP over HTTP uses reqwest's default TLS set-up, which needs a process-wide crypto provider
/// (authd's reqwest has none built in): ring, as for the providers' documents.
fn http_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds an OTLP exporter of either signal for `protocol` (endpoint, headers and timeout from
/// `OTEL_EXPORTER_OTLP_*`); the two builders share their methods' names, not a trait.
macro_rules! otlp_exporter {
    ($exporter:ty, $protocol:expr, $what:literal) => {{
        let builder = <$exporter>::builder();
        let exporter = match $protocol {
            OtlpProtocol::Grpc => builder.with_tonic().build(),
            OtlpProtocol::HttpProtobuf => {
                http_crypto();
                builder
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .build()
            }
        }
        .map_err(|e| anyhow::anyhow!(concat!("OpenTelemetry ", $what, " exporter: {}"), e))?;
        Ok(Reported::new(exporter, $what))
    }};
}

/// The metric exporter for `protocol` (cumulative, as Prometheus counts).
pub fn metric_exporter(protocol: OtlpProtocol) -> anyhow::Result<Reported<opentelemetry_otlp::MetricExporter>> {
    let env = |name: &str| std::env::var(name).ok();
    // The exporter would skip a malformed header, and print an endpoint it cannot use; refuse
    // both, as for spans, without showing them.
    if let Some((var, value)) = signal_or_generic(&env, "METRICS", "HEADERS") {
        parse_headers(&value).map_err(|problem| anyhow::anyhow!("{var}: {problem}"))?;
    }
    if let Some((var, endpoint)) = signal_or_generic(&env, "METRICS", "ENDPOINT") {
        refuse_credentials(&var, &endpoint)?;
    }
    otlp_exporter!(opentelemetry_otlp::MetricExporter, protocol, "metrics")
}

/// `OTEL_EXPORTER_OTLP_{signal}_{suffix}` if set, else `OTEL_EXPORTER_OTLP_{suffix}`: the name
/// read and its value (blank counts as unset).
fn signal_or_generic(env: &dyn Fn(&str) -> Option<String>, signal: &str, suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| {
        let value = env(&name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())?;
        Some((name, value))
    })
}

/// Export failures reach the log once a minute at most (the SDK's own reports are compiled
/// out), and a recovery is logged once.
#[derive(Debug)]
pub struct Failures {
    what: &'static str,
    last_report: Mutex<Option<Instant>>,
}

impl Failures {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            last_report: Mutex::new(None),
        }
    }

    pub fn note<E: std::fmt::Display>(&self, result: &Result<(), E>) {
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if last.take().is_some() {
                    tracing::info!(signal = self.what, "OpenTelemetry export works again");
                }
            }
            Err(error) => {
                if last.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                    tracing::warn!(signal = self.what, %error, "OpenTelemetry export failed; dropping what could not be sent");
                    *last = Some(Instant::now());
                }
            }
        }
    }
}

/// An exporter whose failures are [`Failures`].
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    failures: Failures,
}

impl<E> Reported<E> {
    fn new(inner: E, what: &'static str) -> Self {
        Self {
            inner,
            failures: Failures::new(what),
        }
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Reported<E>
{
    async fn export(&self, metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}

/// Where spans go and how, from the standard variables: the signal's own
/// (`OTEL_EXPORTER_OTLP_TRACES_*`) first, then the generic ones.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceTarget {
    protocol: OtlpProtocol,
    /// For gRPC the collector's address; for HTTP the whole URL of the traces path.
    endpoint: String,
    /// Values marked sensitive: never printed, never indexed by HTTP/2's header compression.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// For one request.
    pub timeout: Duration,
    /// Settings read and not followed, for a warning once logging is up.
    pub ignored: Vec<String>,
}

/// Without the header values (often a credential).
impl std::fmt::Debug for TraceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceTarget")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl TraceTarget {
    pub fn from_env(protocol: OtlpProtocol, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let read = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let either = |suffix: &str| signal_or_generic(env, "TRACES", suffix);
        let mut ignored = Vec::new();
        let endpoint = match (protocol, read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (_, Some(specific)) => specific,
            (OtlpProtocol::Grpc, None) => read("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or("http://localhost:4317".into()),
            (OtlpProtocol::HttpProtobuf, None) => {
                let base = read("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or("http://localhost:4318".into());
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
        };
        // For gRPC, an address without a scheme is http:// when `_INSECURE` is true and
        // https:// otherwise, as the specification has it.
        let endpoint = match (protocol, endpoint.split_once("://")) {
            (OtlpProtocol::Grpc, None) => {
                let insecure = either("INSECURE").is_some_and(|(_, value)| value.eq_ignore_ascii_case("true"));
                format!("{}://{endpoint}", if insecure { "http" } else { "https" })
            }
            _ => endpoint,
        };
        refuse_credentials("the OTLP traces endpoint", &endpoint)?;
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| anyhow::anyhow!("the OTLP traces endpoint is not a URL"))?;
        match (protocol, uri.scheme_str()) {
            (_, Some("http")) | (OtlpProtocol::HttpProtobuf, Some("https")) => {}
            (OtlpProtocol::Grpc, Some("https")) => anyhow::bail!(
                "OTLP/gRPC to an https:// collector needs TLS, which authd's gRPC client does not carry: \
                 use http:// (or an address with OTEL_EXPORTER_OTLP_INSECURE=true) for a collector beside \
                 authd, or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ),
            _ => anyhow::bail!("the OTLP traces endpoint must be an http:// or https:// URL"),
        }
        let headers = match either("HEADERS") {
            None => Vec::new(),
            Some((var, value)) => parse_headers(&value).map_err(|problem| anyhow::anyhow!("{var}: {problem}"))?,
        };
        let timeout = match either("TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some((var, value)) => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => anyhow::bail!("{var} must be a whole number of milliseconds, at least 1"),
            },
        };
        match either("COMPRESSION") {
            Some((var, value)) if !value.eq_ignore_ascii_case("none") => {
                ignored.push(format!("{var}: authd sends spans uncompressed"));
            }
            _ => {}
        }
        Ok(Self {
            protocol,
            endpoint,
            headers,
            timeout,
            ignored,
        })
    }
}

/// Credentials belong in the headers, not in an endpoint's address (where logs and errors would
/// show them).
fn refuse_credentials(what: &str, endpoint: &str) -> anyhow::Result<()> {
    let after_scheme = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        anyhow::bail!("{what} carries credentials in its address; put them in OTEL_EXPORTER_OTLP_HEADERS");
    }
    Ok(())
}

/// `key=value,key=value` with percent-encoded values, as the OpenTelemetry specification has
/// it. A problem is reported by the entry's place, or the key once it is a valid header name;
/// never by the value, nor by a key that may be a credential written the wrong way
/// (`Authorization: Basic …=`).
fn parse_headers(text: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    let mut headers = Vec::new();
    let entries = text.split(',').map(str::trim).filter(|pair| !pair.is_empty());
    for (place, pair) in entries.enumerate().map(|(i, pair)| (i + 1, pair)) {
        let name = pair
            .split_once('=')
            .and_then(|(key, value)| Some((http::HeaderName::from_bytes(key.trim().as_bytes()).ok()?, value)));
        let Some((name, value)) = name else {
            return Err(format!("entry {place} is not name=value with a valid header name"));
        };
        let decoded =
            percent_decode(value.trim()).ok_or_else(|| format!("the value of `{name}` is badly percent-encoded"))?;
        let mut value = http::HeaderValue::from_bytes(&decoded)
            .map_err(|_| format!("the value of `{name}` is not a header value"))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    Some(out)
}

/// The gRPC method of a trace export.
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How export requests travel.
pub enum Transport {
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: http::HeaderMap,
    },
}

impl Transport {
    /// Sends one export request, waiting at most `timeout` for the answer.
    pub async fn send(&self, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
        match self {
            Self::Grpc { client, metadata } => {
                let mut client = client.clone();
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                request.set_timeout(timeout);
                let call = async {
                    client
                        .ready()
                        .await
                        .map_err(|e| format!("collector unreachable: {e}"))?;
                    client
                        .unary(request, http::uri::PathAndQuery::from_static(TRACE_EXPORT), Bytes)
                        .await
                        .map_err(|status| {
                            format!("collector answered {:?}: {}", status.code(), quoted(status.message()))
                        })
                };
                tokio::time::timeout(timeout, call)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))?;
                Ok(())
            }
            Self::Http { client, url, headers } => {
                let answer = client
                    .post(url)
                    .headers(headers.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .timeout(timeout)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("collector unreachable: {}", e.without_url()))?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("collector answered HTTP {}", answer.status()))
                }
            }
        }
    }
}

/// The collector's words, cut short and with control characters escaped, for a log line.
fn quoted(message: &str) -> String {
    let short: String = message.chars().take(200).collect();
    format!("{short:?}")
}

/// A message passed through as its bytes: the request already encoded, the answer (an
/// `ExportTraceServiceResponse`, whose partial-success counts authd does not use) skipped.
#[derive(Clone, Copy, Default)]
struct Bytes;

impl tonic::codec::Codec for Bytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for Bytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Bytes {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        use prost::bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Transport {
    /// The transport to `target`. Must be made inside the Tokio runtime its sends will run on
    /// (a gRPC channel's connection lives there).
    pub fn new(target: &TraceTarget) -> anyhow::Result<Self> {
        Ok(match target.protocol {
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(target.endpoint.clone())?
                    .connect_timeout(target.timeout)
                    .user_agent(concat!("authd/", env!("CARGO_PKG_VERSION")))?
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &target.headers {
                    let name = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())?;
                    let mut value = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                        .map_err(|_| anyhow::anyhow!("an OTLP header value is not valid gRPC metadata"))?;
                    value.set_sensitive(true);
                    metadata.append(name, value);
                }
                Self::Grpc {
                    client: tonic::client::Grpc::new(channel),
                    metadata,
                }
            }
            OtlpProtocol::HttpProtobuf => Self::Http {
                // reqwest's own certificate checks (the system's roots), as the metric exporter.
                client: {
                    http_crypto();
                    reqwest::Client::builder()
                        .timeout(target.timeout)
                        .connect_timeout(target.timeout)
                        .user_agent(concat!("authd/", env!("CARGO_PKG_VERSION")))
                        .build()?
                },
                url: target.endpoint.clone(),
                headers: target.headers.iter().cloned().collect(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(protocol: OtlpProtocol, vars: &[(&str, &str)]) -> anyhow::Result<TraceTarget> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TraceTarget::from_env(protocol, &move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let grpc = target(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap();
        assert_eq!(grpc.endpoint, "http://c:4317");
        assert_eq!(grpc.timeout, DEFAULT_TIMEOUT);
        let http = target(
            OtlpProtocol::HttpProtobuf,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318/")],
        )
        .unwrap();
        assert_eq!(http.endpoint, "https://c:4318/v1/traces");
        let specific = target(
            OtlpProtocol::HttpProtobuf,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ],
        )
        .unwrap();
        assert_eq!(
            specific.endpoint, "http://c:4318/custom",
            "the signal's endpoint is used as it is"
        );
        let blank = target(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " ")]).unwrap();
        assert_eq!(blank.endpoint, "http://localhost:4317");
    }

    #[test]
    fn headers_and_timeouts_take_the_signals_own_first() {
        let t = target(
            OtlpProtocol::Grpc,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "generic=1"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "api-key = s%3Dcr%2Cet , x-tenant=a b",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap();
        assert_eq!(
            t.headers,
            vec![
                (
                    http::HeaderName::from_static("api-key"),
                    http::HeaderValue::from_static("s=cr,et")
                ),
                (
                    http::HeaderName::from_static("x-tenant"),
                    http::HeaderValue::from_static("a b")
                ),
            ]
        );
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert!(t.headers.iter().all(|(_, value)| value.is_sensitive()));
        let shown = format!("{t:?}");
        assert!(shown.contains("api-key") && !shown.contains("cr,et"), "{shown}");
        let t = target(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")]).unwrap();
        assert_eq!(t.timeout, Duration::from_millis(1));
        assert!(t.headers.is_empty());
    }

    #[test]
    fn bad_settings_stop_start_up_without_showing_a_header_value() {
        let problem = |protocol, vars: &[(&str, &str)]| target(protocol, vars).unwrap_err().to_string();
        let bad = problem(
            OtlpProtocol::Grpc,
            &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%zzsecret")],
        );
        assert!(
            bad.contains("OTEL_EXPORTER_OTLP_HEADERS") && bad.contains("authorization"),
            "{bad}"
        );
        assert!(!bad.contains("secret"), "the value stays out of the message: {bad}");
        let bad = problem(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue")]);
        assert!(bad.contains("entry 2"), "{bad}");
        // A credential written as curl takes it: the whole entry is a bad name; none of it shows.
        let bad = problem(
            OtlpProtocol::Grpc,
            &[("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Basic YWRtaW46cGFzcw==")],
        );
        assert!(
            bad.contains("entry 1") && !bad.contains("YWRt") && !bad.contains("Basic"),
            "{bad}"
        );
        let bad = problem(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_HEADERS", "k=%+5")]);
        assert!(bad.contains("percent"), "{bad}");
        for timeout in ["5s", "0", "-1"] {
            let bad = problem(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_TIMEOUT", timeout)]);
            assert!(bad.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{bad}");
        }
        let bad = problem(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]);
        assert!(bad.contains("http/protobuf"), "{bad}");
        let bad = problem(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]);
        assert!(
            bad.contains("INSECURE"),
            "an address without a scheme is TLS by default: {bad}"
        );
        let bad = problem(OtlpProtocol::HttpProtobuf, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]);
        assert!(bad.contains("URL"), "{bad}");
        let bad = problem(
            OtlpProtocol::HttpProtobuf,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:hunter2@c:4318")],
        );
        assert!(bad.contains("credentials") && !bad.contains("hunter2"), "{bad}");
        assert!(
            target(
                OtlpProtocol::HttpProtobuf,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]
            )
            .is_ok()
        );
    }

    #[test]
    fn insecure_addresses_and_compression_are_read_as_the_sdk_did() {
        let t = target(
            OtlpProtocol::Grpc,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "TRUE"),
            ],
        )
        .unwrap();
        assert_eq!(t.endpoint, "http://collector:4317");
        assert!(t.ignored.is_empty());
        let t = target(
            OtlpProtocol::Grpc,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ],
        )
        .unwrap();
        assert_eq!(
            t.ignored,
            ["OTEL_EXPORTER_OTLP_COMPRESSION: authd sends spans uncompressed"]
        );
        let t = target(OtlpProtocol::Grpc, &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "None")]).unwrap();
        assert!(t.ignored.is_empty());
    }
}
