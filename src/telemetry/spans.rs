//! Spans: the server span of each call (gRPC or HTTP) and the client spans inside it.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The tracer of server spans, set by [`super::init`] when spans are exported.
static TRACER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracer> = std::sync::OnceLock::new();

pub(super) fn set_tracer(tracer: opentelemetry_sdk::trace::SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// The target of the spans that only the logs see (the exporter makes their OpenTelemetry twin
/// itself, see [`ServerSpan`]).
pub const LOG_ONLY: &str = "authd::calls";

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one call served. Two halves: an OpenTelemetry `SERVER` span made straight on the
/// SDK's tracer (no per-attribute lookups through the `tracing` registry, which cost a quarter
/// of a cached `Introspect`), and a `tracing` span for the log lines written during the call,
/// carrying `trace_id` and `span_id`. While the call's future is polled, [`ServerSpan::context`]
/// is attached, so the child spans made with `tracing` (statements, Redis, hashing) hang under
/// the server span.
pub struct ServerSpan {
    /// For the logs.
    pub log: tracing::Span,
    /// The exported span and its context; `None` when nothing is exported.
    otel: Option<opentelemetry::Context>,
}

impl ServerSpan {
    /// Starts the span of a call `name`d so, continuing the caller's W3C `traceparent` and
    /// `tracestate` from `headers`, with `attributes` known at the start.
    pub fn start(
        log: tracing::Span,
        name: impl Into<std::borrow::Cow<'static, str>>,
        headers: &http::HeaderMap,
        attributes: Vec<opentelemetry::KeyValue>,
    ) -> Self {
        use opentelemetry::trace::Tracer as _;
        let parent = headers
            .contains_key("traceparent")
            .then(|| TraceContextPropagator::new().extract(&Headers(headers)));
        let otel = TRACER.get().map(|tracer| {
            let parent = parent.clone().unwrap_or_default();
            let span = tracer
                .span_builder(name)
                .with_kind(opentelemetry::trace::SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        });
        let own = otel.as_ref().map(|cx| cx.span().span_context().clone());
        match own.filter(opentelemetry::trace::SpanContext::is_valid) {
            Some(own) => {
                log.record("trace_id", tracing::field::display(own.trace_id()));
                log.record("span_id", tracing::field::display(own.span_id()));
            }
            None => {
                let callers = parent.map_or(TraceId::INVALID, |cx| cx.span().span_context().trace_id());
                if callers != TraceId::INVALID {
                    log.record("trace_id", tracing::field::display(callers));
                }
            }
        }
        Self { log, otel }
    }

    /// No span at all (a probe).
    pub fn untraced() -> Self {
        Self {
            log: tracing::Span::none(),
            otel: None,
        }
    }

    /// What to attach while the call runs, if anything is exported.
    pub fn context(&self) -> Option<&opentelemetry::Context> {
        self.otel.as_ref()
    }

    pub fn set_attribute(&self, attribute: opentelemetry::KeyValue) {
        if let Some(cx) = &self.otel {
            cx.span().set_attribute(attribute);
        }
    }

    /// Marks the call failed with `error_type` (a low-cardinality class: a status code's name).
    pub fn failed(&self, error_type: &str) {
        if let Some(cx) = &self.otel {
            let span = cx.span();
            span.set_attribute(opentelemetry::KeyValue::new("error.type", error_type.to_string()));
            span.set_status(opentelemetry::trace::Status::error(error_type.to_string()));
        }
    }

    /// Ends the exported span now.
    pub fn end(&self) {
        if let Some(cx) = &self.otel {
            cx.span().end();
        }
    }
}

/// A log-only span of a call (target [`LOG_ONLY`]), with the ids [`ServerSpan::start`] records.
#[macro_export]
macro_rules! call_log_span {
    ($kind:literal) => {
        tracing::info_span!(
            target: "authd::calls",
            $kind,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    };
}

/// Whether the code running is part of a call or job that is traced (for the logs or for
/// export): client spans are made only then, so background probes make no root spans.
pub fn in_call() -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    !tracing::Span::current().is_none() || opentelemetry::Context::current().has_active_span()
}

/// A client span for a call to `system` (`redis`, `smtp`, …) named `operation`, inside the current
/// span; none outside a traced call, so background probes make no root spans.
pub fn client(system: &'static str, operation: &'static str) -> tracing::Span {
    if !in_call() {
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
    if !in_call() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("client", otel.name = "GET", otel.kind = "client");
    span.set_attribute("http.request.method", "GET");
    span.set_attribute("server.address", host.to_string());
    span
}
