//! Spans: the server span of each call (gRPC or HTTP) and the client spans inside it.

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, ShouldSample, SpanData, SpanProcessor as _,
};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan as _;

/// What server spans are made with when spans are exported, set by [`super::init`]: the
/// sampler the SDK reads from `OTEL_TRACES_SAMPLER`, the SDK's id generator, and the processor
/// its tracer hands spans to.
pub(super) struct Exporting {
    pub sampler: Box<dyn ShouldSample>,
    pub ids: RandomIdGenerator,
    pub processor: super::batch::Encoding,
    pub scope: opentelemetry::InstrumentationScope,
    /// `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, as the SDK reads it.
    pub max_attributes: usize,
}

/// A span's start or end: the system's time as the SDK takes it, to the nanosecond (not the
/// service's [`crate::clock::Clock`], which is the time of its rules and can be set in tests).
fn wall_clock() -> SystemTime {
    #[allow(clippy::disallowed_methods)]
    SystemTime::now()
}

static EXPORTING: std::sync::OnceLock<Exporting> = std::sync::OnceLock::new();

pub(super) fn export_with(exporting: Exporting) {
    let _ = EXPORTING.set(exporting);
}

/// The target of the spans that only the logs see (the exporter makes their OpenTelemetry twin
/// itself, see [`ServerSpan`]).
pub const LOG_ONLY: &str = "authd::calls";

struct Headers<'a>(&'a http::HeaderMap);

/// The longest caller's `tracestate` kept. It is copied into every span of the call, so a long
/// one would multiply what the span queue holds; W3C lets a vendor drop it whole.
const MAX_TRACESTATE: usize = 512;

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).and_then(|value| value.to_str().ok())?;
        (key != "tracestate" || value.len() <= MAX_TRACESTATE).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one call served. Two halves: an OpenTelemetry `SERVER` span recorded here and
/// handed to the span processor when it ends (no SDK span object: its context, its lock and its
/// export copy cost more than a cached `Introspect`'s other telemetry together), and a `tracing`
/// span for the log lines written during the call, which carry its `trace_id` and `span_id`
/// ([`WithIds`]). While the call's future is polled, [`ServerSpan::context`] is attached, so
/// the child spans made with `tracing` (statements, Redis, hashing) hang under the server span.
pub struct ServerSpan {
    /// For the logs.
    pub log: tracing::Span,
    /// The span's context for its children; `None` when nothing is exported.
    otel: Option<opentelemetry::Context>,
    /// What is exported when the span ends; `None` when the sampler dropped it; empty once
    /// ended. Shared with the call's context, for [`set_call_attribute`].
    recording: Option<Arc<Mutex<Option<Recording>>>>,
}

/// The recording server span of the call whose context is current.
#[derive(Clone)]
struct CallRecording(Arc<Mutex<Option<Recording>>>);

/// Adds `attribute` to the server span of the call running (attached as its context), if it is
/// being recorded.
pub fn set_call_attribute(attribute: KeyValue) {
    opentelemetry::Context::map_current(|cx| {
        if let Some(CallRecording(recording)) = cx.get::<CallRecording>()
            && let Some(recording) = recording.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
        {
            recording.add(attribute);
        }
    });
}

/// A server span being recorded.
struct Recording {
    context: SpanContext,
    parent: Option<SpanContext>,
    name: Cow<'static, str>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    status: Status,
}

impl Recording {
    /// Adds `attribute`, within the span's limit (beyond it, counts it dropped, as the SDK does).
    fn add(&mut self, attribute: KeyValue) {
        let limit = EXPORTING.get().map_or(usize::MAX, |exporting| exporting.max_attributes);
        if self.attributes.len() < limit {
            self.attributes.push(attribute);
        } else {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
        }
    }
}

impl ServerSpan {
    /// Starts the span of a call `name`d so, continuing the caller's W3C `traceparent` and
    /// `tracestate` from `headers`, with `attributes` known at the start.
    pub fn start(
        log: tracing::Span,
        name: impl Into<Cow<'static, str>>,
        headers: &http::HeaderMap,
        mut attributes: Vec<KeyValue>,
    ) -> Self {
        // From an empty context: nothing of whatever is attached now carries over.
        let parent = headers.contains_key("traceparent").then(|| {
            TraceContextPropagator::new().extract_with_context(&opentelemetry::Context::new(), &Headers(headers))
        });
        let parent_span = parent
            .as_ref()
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let Some(exporting) = EXPORTING.get().filter(|exporting| !exporting.processor.is_stopping()) else {
            if let Some(trace) = parent_span.as_ref().map(SpanContext::trace_id) {
                CallIds { trace, span: None }.keep_in(&log);
            }
            return Self {
                log,
                otel: None,
                recording: None,
            };
        };
        let name = name.into();
        let trace = parent_span
            .as_ref()
            .map_or_else(|| exporting.ids.new_trace_id(), SpanContext::trace_id);
        let span = exporting.ids.new_span_id();
        // The SDK's tracer always gives the sampler a context, an empty one for a root span.
        let root = opentelemetry::Context::new();
        let sampled = exporting.sampler.should_sample(
            Some(parent.as_ref().unwrap_or(&root)),
            trace,
            &name,
            &SpanKind::Server,
            &attributes,
            &[],
        );
        let flags = if sampled.decision == SamplingDecision::RecordAndSample {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(trace, span, flags, false, sampled.trace_state);
        CallIds {
            trace,
            span: Some(span),
        }
        .keep_in(&log);
        let recording = (sampled.decision != SamplingDecision::Drop).then(|| {
            attributes.extend(sampled.attributes);
            let dropped_attributes = attributes.len().saturating_sub(exporting.max_attributes);
            attributes.truncate(exporting.max_attributes);
            Arc::new(Mutex::new(Some(Recording {
                context: context.clone(),
                parent: parent_span,
                name,
                start: wall_clock(),
                attributes,
                dropped_attributes: u32::try_from(dropped_attributes).unwrap_or(u32::MAX),
                status: Status::Unset,
            })))
        });
        let mut otel = parent.unwrap_or_default().with_remote_span_context(context);
        if let Some(recording) = &recording {
            otel = otel.with_value(CallRecording(Arc::clone(recording)));
        }
        Self {
            log,
            otel: Some(otel),
            recording,
        }
    }

    /// No span at all (a probe).
    pub fn untraced() -> Self {
        Self {
            log: tracing::Span::none(),
            otel: None,
            recording: None,
        }
    }

    /// What to attach while the call runs, if anything is exported.
    pub fn context(&self) -> Option<&opentelemetry::Context> {
        self.otel.as_ref()
    }

    fn recorded(&self, change: impl FnOnce(&mut Recording)) {
        if let Some(recording) = &self.recording
            && let Some(recording) = recording.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
        {
            change(recording);
        }
    }

    pub fn set_attribute(&self, attribute: KeyValue) {
        self.recorded(|recording| recording.add(attribute));
    }

    /// Marks the call failed with `error_type` (a low-cardinality class: a status code's name).
    pub fn failed(&self, error_type: &str) {
        self.recorded(|recording| {
            recording.add(KeyValue::new("error.type", error_type.to_string()));
            recording.status = Status::error(error_type.to_string());
        });
    }

    /// Ends the exported span now (later calls do nothing).
    pub fn end(&self) {
        let Some(recording) = &self.recording else { return };
        let Some(ended) = recording.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let Some(exporting) = EXPORTING.get() else { return };
        let (parent_span_id, parent_span_is_remote) =
            ended.parent.as_ref().map_or((SpanId::INVALID, false), |parent| {
                (parent.span_id(), parent.is_remote())
            });
        exporting.processor.on_end(SpanData {
            span_context: ended.context,
            parent_span_id,
            parent_span_is_remote,
            span_kind: SpanKind::Server,
            name: ended.name,
            start_time: ended.start,
            end_time: wall_clock(),
            attributes: ended.attributes,
            dropped_attributes_count: ended.dropped_attributes,
            events: Default::default(),
            links: Default::default(),
            status: ended.status,
            instrumentation_scope: exporting.scope.clone(),
        });
    }
}

/// A span dropped before it was ended (a call cut off) ends then, as an SDK span does.
impl Drop for ServerSpan {
    fn drop(&mut self) {
        self.end();
    }
}

/// A log-only span of a call (target [`LOG_ONLY`]); [`ServerSpan::start`] keeps the call's ids on
/// it for [`WithIds`].
#[macro_export]
macro_rules! call_log_span {
    ($kind:literal) => {
        tracing::info_span!(target: "authd::calls", $kind)
    };
}

/// The ids a log line written during a call carries: the call's trace and, when it is exported,
/// its server span. Kept in the log span's extensions rather than as its fields, so they are
/// formatted only when a line is written, not for every call (a tenth of a cached
/// `Introspect` went on formatting them up front).
#[derive(Clone, Copy)]
struct CallIds {
    trace: TraceId,
    span: Option<SpanId>,
}

impl CallIds {
    fn keep_in(self, log: &tracing::Span) {
        log.with_subscriber(|(id, dispatch)| {
            if let Some(span) = dispatch
                .downcast_ref::<tracing_subscriber::Registry>()
                .and_then(|registry| registry.span(id))
            {
                span.extensions_mut().insert(self);
            }
        });
    }
}

/// A log line's format with the ids of the call it was written in: `trace_id` and `span_id`
/// first in a JSON object, or ` trace_id=… span_id=…` at the end of a text line.
pub(super) struct WithIds<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx
            .event_scope()
            .and_then(|mut scope| scope.find_map(|span| span.extensions().get::<CallIds>().copied()));
        let Some(ids) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Formatted aside (without colours: a `Writer` with them cannot be made outside the
        // library) so the ids can go inside the object or before the newline.
        let mut line = String::new();
        self.inner
            .format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let span = ids.span.map(|span| span.to_string());
        if self.json {
            let Some(rest) = line.strip_prefix('{') else {
                return writer.write_str(&line);
            };
            write!(writer, "{{\"trace_id\":\"{}\",", ids.trace)?;
            if let Some(span) = span {
                write!(writer, "\"span_id\":\"{span}\",")?;
            }
            writer.write_str(rest)
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            write!(writer, "{body} trace_id={}", ids.trace)?;
            if let Some(span) = span {
                write!(writer, " span_id={span}")?;
            }
            writer.write_char('\n')
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_long_tracestate_is_dropped_and_a_short_one_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        headers.insert("tracestate", "vendor=short".parse().unwrap());
        assert_eq!(Headers(&headers).get("tracestate"), Some("vendor=short"));
        let long = format!("vendor={}", "x".repeat(MAX_TRACESTATE));
        headers.insert("tracestate", long.parse().unwrap());
        assert_eq!(Headers(&headers).get("tracestate"), None);
        assert!(Headers(&headers).get("traceparent").is_some());
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a line logged inside a call with `ids`, and one outside any call, look like.
    fn logged(json: bool, ids: CallIds) -> Vec<String> {
        let lines = Lines::default();
        let writer = {
            let lines = lines.clone();
            move || lines.clone()
        };
        let logs = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
        let dispatch = if json {
            let format = tracing_subscriber::fmt::format().json().with_span_list(true);
            tracing::Dispatch::new(
                tracing_subscriber::registry().with(logs.json().event_format(WithIds { inner: format, json })),
            )
        } else {
            let format = tracing_subscriber::fmt::format().with_ansi(false);
            tracing::Dispatch::new(
                tracing_subscriber::registry().with(logs.event_format(WithIds { inner: format, json })),
            )
        };
        tracing::dispatcher::with_default(&dispatch, || {
            let call = crate::call_log_span!("rpc");
            ids.keep_in(&call);
            call.in_scope(|| tracing::info!(user = 7, "inside"));
            tracing::info!("outside");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn ids(span: bool) -> CallIds {
        CallIds {
            trace: TraceId::from_hex(TRACE).unwrap(),
            span: span.then(|| SpanId::from_hex(SPAN).unwrap()),
        }
    }

    #[test]
    fn json_lines_in_a_call_carry_its_ids() {
        let lines = logged(true, ids(true));
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["trace_id"], TRACE, "{}", lines[0]);
        assert_eq!(inside["span_id"], SPAN);
        assert_eq!(inside["fields"]["message"], "inside");
        assert_eq!(inside["fields"]["user"], 7);
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(outside["fields"]["message"], "outside");
        assert!(outside.get("trace_id").is_none(), "{}", lines[1]);

        // Not exported: the caller's trace only.
        let lines = logged(true, ids(false));
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["trace_id"], TRACE);
        assert!(inside.get("span_id").is_none(), "{}", lines[0]);
    }

    #[test]
    fn text_lines_in_a_call_end_with_its_ids() {
        let lines = logged(false, ids(true));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].ends_with(&format!("inside user=7 trace_id={TRACE} span_id={SPAN}")),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("outside"), "{}", lines[1]);
    }
}
