//! A real OTLP collector inside the tests: OTLP/gRPC (tonic, the official service definitions) or
//! OTLP/HTTP (protobuf bodies over axum). It keeps every request it receives, and answers each with
//! an empty success, as a collector does.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a collector has received, in order of arrival.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Every request re-encoded, one after the other.
    raw: Vec<u8>,
    /// OTLP/HTTP requests refused (wrong content type, undecodable body), described.
    refused: Vec<String>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Received>>);

impl Store {
    fn traces(&self, request: ExportTraceServiceRequest) {
        let mut received = self.0.lock().unwrap();
        received.raw.extend(request.encode_to_vec());
        received.traces.push(request);
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        let mut received = self.0.lock().unwrap();
        received.raw.extend(request.encode_to_vec());
        received.metrics.push(request);
    }

    fn refused(&self, why: String) {
        self.0.lock().unwrap().refused.push(why);
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// One span as exported, with the resource and scope of its batch.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    pub resource: Vec<KeyValue>,
    pub scope: Option<InstrumentationScope>,
    pub span: Span,
}

impl ExportedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn kind(&self) -> SpanKind {
        self.span.kind()
    }

    /// The span status's code (`STATUS_CODE_UNSET` when it has none).
    pub fn status(&self) -> StatusCode {
        self.span.status.as_ref().map_or(StatusCode::Unset, |s| s.code())
    }

    pub fn attribute(&self, key: &str) -> Option<&AnyValue> {
        attribute(&self.span.attributes, key)
    }

    /// A string attribute (`None` when absent or of another type).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attribute(key).and_then(as_str)
    }

    /// An integer attribute (`None` when absent or of another type).
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attribute(key).and_then(as_int)
    }

    /// A string attribute of the resource.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        attribute(&self.resource, key).and_then(as_str)
    }

    /// Lower-case hex, as in `traceparent`.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// One line for failure messages: name, kind, ids, status and every attribute.
    pub fn describe(&self) -> String {
        format!(
            "{:?} kind={} scope={} trace={} span={} parent={} status={} attributes={{{}}}",
            self.name(),
            self.kind().as_str_name(),
            self.scope.as_ref().map_or("", |s| s.name.as_str()),
            self.trace_id(),
            self.span_id(),
            self.parent_span_id(),
            self.status().as_str_name(),
            describe_attributes(&self.span.attributes),
        )
    }
}

/// One data point of a metric as exported, with its metric's name and unit.
#[derive(Clone, Debug)]
pub struct ExportedPoint {
    pub resource: Vec<KeyValue>,
    pub name: String,
    pub unit: String,
    pub attributes: Vec<KeyValue>,
    pub value: PointValue,
}

/// What a data point holds, by the kind of its metric.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Gauge(f64),
    Sum(f64),
    /// An explicit-bucket histogram: its count and sum.
    Histogram {
        count: u64,
        sum: Option<f64>,
    },
    ExponentialHistogram {
        count: u64,
    },
    Summary {
        count: u64,
    },
}

impl ExportedPoint {
    pub fn str(&self, key: &str) -> Option<&str> {
        attribute(&self.attributes, key).and_then(as_str)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} [{}] {:?} {{{}}}",
            self.name,
            self.unit,
            self.value,
            describe_attributes(&self.attributes)
        )
    }
}

/// An OTLP collector on 127.0.0.1; it stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    store: Store,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Collector {
    /// OTLP/gRPC: `TraceService/Export` and `MetricsService/Export`.
    pub async fn start_grpc() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(store.clone()))
            .add_service(MetricsServiceServer::new(store.clone()));
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming(incoming)
                .await
                .expect("the OTLP/gRPC collector");
        });
        Collector { addr, store, server }
    }

    /// OTLP/HTTP with protobuf bodies: `POST /v1/traces` and `POST /v1/metrics`.
    pub async fn start_http() -> Collector {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(http_traces))
            .route("/v1/metrics", post(http_metrics))
            .with_state(store.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the OTLP/HTTP collector");
        });
        Collector { addr, store, server }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` names.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, flattened out of its batches.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let received = self.store.0.lock().unwrap();
        let mut spans = Vec::new();
        for request in &received.traces {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.push(ExportedSpan {
                            resource: resource.clone(),
                            scope: scope_spans.scope.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The spans of one trace (`trace_id` in lower-case hex).
    pub fn trace(&self, trace_id: &str) -> Vec<ExportedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id() == trace_id).collect()
    }

    /// Every metric received so far, each with the resource of its batch.
    pub fn metrics(&self) -> Vec<(Vec<KeyValue>, Metric)> {
        let received = self.store.0.lock().unwrap();
        let mut metrics = Vec::new();
        for request in &received.metrics {
            for resource_metrics in &request.resource_metrics {
                let resource = resource_metrics
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_metrics in &resource_metrics.scope_metrics {
                    for metric in &scope_metrics.metrics {
                        metrics.push((resource.clone(), metric.clone()));
                    }
                }
            }
        }
        metrics
    }

    /// The names of the metrics received, sorted, each once.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.metrics().into_iter().map(|(_, m)| m.name).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every data point received for the metric `name`, over all exports.
    pub fn metric(&self, name: &str) -> Vec<ExportedPoint> {
        let mut points = Vec::new();
        for (resource, metric) in self.metrics().into_iter().filter(|(_, m)| m.name == name) {
            let point = |attributes: &[KeyValue], value| ExportedPoint {
                resource: resource.clone(),
                name: metric.name.clone(),
                unit: metric.unit.clone(),
                attributes: attributes.to_vec(),
                value,
            };
            match &metric.data {
                Some(metric::Data::Gauge(gauge)) => points.extend(
                    gauge
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, PointValue::Gauge(number(p)))),
                ),
                Some(metric::Data::Sum(sum)) => points.extend(
                    sum.data_points
                        .iter()
                        .map(|p| point(&p.attributes, PointValue::Sum(number(p)))),
                ),
                Some(metric::Data::Histogram(histogram)) => points.extend(histogram.data_points.iter().map(|p| {
                    point(
                        &p.attributes,
                        PointValue::Histogram {
                            count: p.count,
                            sum: p.sum,
                        },
                    )
                })),
                Some(metric::Data::ExponentialHistogram(histogram)) => points.extend(
                    histogram
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, PointValue::ExponentialHistogram { count: p.count })),
                ),
                Some(metric::Data::Summary(summary)) => points.extend(
                    summary
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, PointValue::Summary { count: p.count })),
                ),
                None => {}
            }
        }
        points
    }

    /// Every request received, re-encoded and concatenated: what a scan for leaked values reads.
    pub fn raw_bytes(&self) -> Vec<u8> {
        self.store.0.lock().unwrap().raw.clone()
    }

    /// Polls until `predicate` holds; panics after `within`, with what was received.
    pub async fn wait_for(&self, within: Duration, mut predicate: impl FnMut(&Collector) -> bool) {
        let deadline = Instant::now() + within;
        while !predicate(self) {
            assert!(
                Instant::now() < deadline,
                "the collector did not receive what was awaited within {within:?}; it has:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything received, one span or data point a line, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let spans = self.spans();
        let _ = writeln!(out, "{} spans:", spans.len());
        for span in &spans {
            let _ = writeln!(out, "  {}", span.describe());
        }
        // Cumulative points repeat from export to export: each distinct one once.
        let names = self.metric_names();
        let _ = writeln!(out, "{} metrics:", names.len());
        let mut seen = std::collections::HashSet::new();
        for name in &names {
            for point in self.metric(name) {
                let line = point.describe();
                if seen.insert(line.clone()) {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        let refused = self.store.0.lock().unwrap().refused.clone();
        if !refused.is_empty() {
            let _ = writeln!(out, "refused requests: {refused:?}");
        }
        out
    }
}

fn number(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match point.value {
        Some(Value::AsDouble(v)) => v,
        Some(Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

/// The value of the attribute `key`.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A string attribute of a resource or data point.
pub fn str_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attribute(attributes, key).and_then(as_str)
}

pub fn as_str(value: &AnyValue) -> Option<&str> {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

pub fn as_int(value: &AnyValue) -> Option<i64> {
    match value.value {
        Some(any_value::Value::IntValue(i)) => Some(i),
        _ => None,
    }
}

/// Any value as text, its type shown when it is not a string (`42i`, `true`, `1.5f`).
pub fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::IntValue(i)) => format!("{i}i"),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format!("{d}f"),
        Some(any_value::Value::BytesValue(b)) => format!("bytes:{}", hex(b)),
        Some(any_value::Value::ArrayValue(array)) => {
            format!("[{}]", array.values.iter().map(text).collect::<Vec<_>>().join(", "))
        }
        Some(any_value::Value::KvlistValue(list)) => format!("{{{}}}", describe_attributes(&list.values)),
        Some(any_value::Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => "<none>".to_string(),
    }
}

fn describe_attributes(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value.as_ref().map(text).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn http_traces(
    axum::extract::State(store): axum::extract::State<Store>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    match decode::<ExportTraceServiceRequest>(&headers, &body) {
        Ok(request) => {
            store.traces(request);
            protobuf(ExportTraceServiceResponse::default())
        }
        Err(why) => refuse(&store, "/v1/traces", why),
    }
}

async fn http_metrics(
    axum::extract::State(store): axum::extract::State<Store>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    match decode::<ExportMetricsServiceRequest>(&headers, &body) {
        Ok(request) => {
            store.metrics(request);
            protobuf(ExportMetricsServiceResponse::default())
        }
        Err(why) => refuse(&store, "/v1/metrics", why),
    }
}

/// An OTLP/HTTP body, as long as it says it is protobuf.
fn decode<M: Message + Default>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<M, (axum::http::StatusCode, String)> {
    use axum::http::StatusCode;
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type != "application/x-protobuf" {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type {content_type:?}"),
        ));
    }
    if let Some(encoding) = headers.get("content-encoding") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-encoding {encoding:?}"),
        ));
    }
    M::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable body: {e}")))
}

fn protobuf(message: impl Message) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        message.encode_to_vec(),
    )
        .into_response()
}

fn refuse(store: &Store, path: &str, (status, why): (axum::http::StatusCode, String)) -> axum::response::Response {
    use axum::response::IntoResponse;
    store.refused(format!("{path}: {why}"));
    (status, why).into_response()
}
