//! What the server spans of gRPC calls and HTTP requests share: continuing the caller's trace
//! and the ids that log lines carry.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A server span: `name` for OpenTelemetry, `trace_id` and `span_id` for the log lines written
/// inside it (recorded by [`continue_trace`]).
#[macro_export]
macro_rules! server_span {
    ($kind:literal, $name:expr) => {
        tracing::info_span!(
            $kind,
            otel.name = $name,
            otel.kind = "server",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    };
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the W3C `traceparent` (and `tracestate`) the caller sent, and records
/// its ids for the logs. Without span export the caller's trace id is still logged.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = if headers.contains_key("traceparent") {
        Some(TraceContextPropagator::new().extract(&Headers(headers)))
    } else {
        None
    };
    let callers = parent
        .as_ref()
        .map_or(TraceId::INVALID, |cx| cx.span().span_context().trace_id());
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        span.record("trace_id", tracing::field::display(own.trace_id()));
        span.record("span_id", tracing::field::display(own.span_id()));
    } else if callers != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(callers));
    }
}

/// Marks `span` failed with `error_type` (a low-cardinality class: a status code's name).
pub fn failed(span: &tracing::Span, error_type: &'static str) {
    span.set_attribute("error.type", error_type);
    span.set_status(opentelemetry::trace::Status::error(error_type));
}

/// A client span for a call to `system` (`redis`, `smtp`, …) named `operation`, inside the current
/// span; none outside a traced call, so background probes make no root spans.
pub fn client(system: &'static str, operation: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("client", otel.name = operation, otel.kind = "client");
    span.set_attribute("db.system.name", system);
    span.set_attribute("db.operation.name", operation);
    span
}

/// A client span for an HTTP `GET` of a public document at `host` (a provider's discovery
/// document or key set), inside the current span.
pub fn http_get(host: &str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("client", otel.name = "GET", otel.kind = "client");
    span.set_attribute("http.request.method", "GET");
    span.set_attribute("server.address", host.to_string());
    span
}
