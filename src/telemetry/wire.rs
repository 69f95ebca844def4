//! OTLP's trace export request (`ExportTraceServiceRequest` of `opentelemetry-proto`), written
//! straight from the SDK's finished spans into one buffer. The exporter of `opentelemetry-otlp`
//! first builds the generated message types (a `String` or `Vec` for every id, key and value)
//! and then encodes them; on the cheapest call that conversion was most of what exporting a
//! span cost. The bytes are the same message: a test decodes them with the generated types and
//! compares them with that crate's own conversion.

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use std::time::{SystemTime, UNIX_EPOCH};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// The span flags of OTLP: the context's trace flags, and whether the parent's remoteness is
/// known (always, from the SDK) and true.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// A protobuf message being written.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    /// A length-delimited field, written even when empty.
    fn len_always(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LEN);
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// A `string` or `bytes` field; proto3 leaves an empty one out.
    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.len_always(field, bytes);
        }
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, VARINT);
            self.varint(value);
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, FIXED64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.key(field, FIXED32);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    /// A message field written by `body` in place: its length goes in front once known (one
    /// byte reserved, the body moved along in the rare case of a longer length).
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.key(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        body(self);
        let len = self.buf.len() - at - 1;
        if len < 0x80 {
            self.buf[at] = len as u8;
            return;
        }
        let mut prefix = Writer::default();
        prefix.varint(len as u64);
        let extra = prefix.buf.len() - 1;
        let end = self.buf.len();
        self.buf.resize(end + extra, 0);
        self.buf.copy_within(at + 1..end, at + 1 + extra);
        self.buf[at..at + prefix.buf.len()].copy_from_slice(&prefix.buf);
    }

    /// `repeated KeyValue` (`common.v1.KeyValue`: key 1, value 2).
    fn attributes(&mut self, field: u32, attributes: &[KeyValue]) {
        for attribute in attributes {
            self.message(field, |w| {
                w.string(1, attribute.key.as_str());
                w.message(2, |w| w.value(&attribute.value));
            });
        }
    }

    /// The fields of an `AnyValue` (a oneof: written even when it is the default).
    fn value(&mut self, value: &Value) {
        match value {
            Value::Bool(b) => {
                self.key(2, VARINT);
                self.varint(u64::from(*b));
            }
            Value::I64(i) => {
                self.key(3, VARINT);
                self.varint(*i as u64);
            }
            Value::F64(f) => {
                self.key(4, FIXED64);
                self.buf.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::String(s) => self.len_always(1, s.as_str().as_bytes()),
            Value::Array(array) => self.message(5, |w| w.array(array)),
            // A kind of value added to the API later: an empty value, as the SDK's own
            // conversion writes it.
            _ => {}
        }
    }

    /// The `values` (field 1) of an `ArrayValue`.
    fn array(&mut self, array: &Array) {
        fn each<T>(w: &mut Writer, items: &[T], one: impl Fn(&T) -> Value) {
            for item in items {
                w.message(1, |w| w.value(&one(item)));
            }
        }
        match array {
            Array::Bool(items) => each(self, items, |b| Value::Bool(*b)),
            Array::I64(items) => each(self, items, |i| Value::I64(*i)),
            Array::F64(items) => each(self, items, |f| Value::F64(*f)),
            Array::String(items) => each(self, items, |s: &StringValue| Value::String(s.clone())),
            _ => {}
        }
    }

    /// A `trace.v1.Span`.
    fn span(&mut self, span: &SpanData) {
        let context = &span.span_context;
        self.bytes(1, &context.trace_id().to_bytes());
        self.bytes(2, &context.span_id().to_bytes());
        self.string(3, &context.trace_state().header());
        if span.parent_span_id != SpanId::INVALID {
            self.bytes(4, &span.parent_span_id.to_bytes());
        }
        self.string(5, &span.name);
        self.uint(6, span_kind(&span.span_kind));
        self.fixed64(7, nanos(span.start_time));
        self.fixed64(8, nanos(span.end_time));
        self.attributes(9, &span.attributes);
        self.uint(10, u64::from(span.dropped_attributes_count));
        for event in span.events.iter() {
            self.message(11, |w| {
                w.fixed64(1, nanos(event.timestamp));
                w.string(2, &event.name);
                w.attributes(3, &event.attributes);
                w.uint(4, u64::from(event.dropped_attributes_count));
            });
        }
        self.uint(12, u64::from(span.events.dropped_count));
        for link in span.links.iter() {
            let linked = &link.span_context;
            self.message(13, |w| {
                w.bytes(1, &linked.trace_id().to_bytes());
                w.bytes(2, &linked.span_id().to_bytes());
                w.string(3, &linked.trace_state().header());
                w.attributes(4, &link.attributes);
                w.uint(5, u64::from(link.dropped_attributes_count));
                w.fixed32(6, flags(linked.is_remote(), linked.trace_flags().to_u8()));
            });
        }
        self.uint(14, u64::from(span.links.dropped_count));
        // Fields in the order of their numbers, as the generated encoder writes them.
        self.message(15, |w| match &span.status {
            Status::Unset => {}
            Status::Ok => w.uint(3, 1),
            Status::Error { description } => {
                w.string(2, description);
                w.uint(3, 2);
            }
        });
        self.fixed32(16, flags(span.parent_span_is_remote, context.trace_flags().to_u8()));
    }

    /// A `common.v1.InstrumentationScope`.
    fn scope(&mut self, scope: &InstrumentationScope) {
        self.string(1, scope.name());
        self.string(2, scope.version().unwrap_or_default());
        for attribute in scope.attributes() {
            self.message(3, |w| {
                w.string(1, attribute.key.as_str());
                w.message(2, |w| w.value(&attribute.value));
            });
        }
    }
}

fn span_kind(kind: &opentelemetry::trace::SpanKind) -> u64 {
    use opentelemetry::trace::SpanKind;
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    u32::from(trace_flags) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

/// Writes export requests for one process's resource.
#[derive(Default)]
pub struct TraceRequests {
    /// The fields of the `ResourceSpans` that precede its scopes: the resource (field 1).
    resource: Vec<u8>,
    /// The resource's schema URL (`ResourceSpans` field 3).
    schema_url: String,
}

impl TraceRequests {
    pub fn new(resource: &Resource) -> Self {
        let mut w = Writer::default();
        w.message(1, |w| {
            for (key, value) in resource.iter() {
                w.message(1, |w| {
                    w.string(1, key.as_str());
                    w.message(2, |w| w.value(value));
                });
            }
        });
        Self {
            resource: w.buf,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }

    /// One request carrying `spans` (entries written by [`append_span`]) of one `scope`.
    pub fn request(&self, scope: &InstrumentationScope, spans: &[u8]) -> Vec<u8> {
        self.request_of(&[(scope, spans)])
    }

    /// One request carrying `spans`, grouped by instrumentation scope in the order the scopes
    /// first appear.
    #[cfg(test)]
    fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let mut scopes: Vec<(&InstrumentationScope, Vec<u8>)> = Vec::new();
        for span in spans {
            let scope = &span.instrumentation_scope;
            let at = match scopes.iter().position(|(known, _)| *known == scope) {
                Some(at) => at,
                None => {
                    scopes.push((scope, Vec::new()));
                    scopes.len() - 1
                }
            };
            append_span(&mut scopes[at].1, span);
        }
        let scopes: Vec<(&InstrumentationScope, &[u8])> =
            scopes.iter().map(|(scope, spans)| (*scope, spans.as_slice())).collect();
        self.request_of(&scopes)
    }

    fn request_of(&self, scopes: &[(&InstrumentationScope, &[u8])]) -> Vec<u8> {
        let size = self.resource.len() + scopes.iter().map(|(_, spans)| spans.len() + 64).sum::<usize>() + 16;
        let mut request = Writer {
            buf: Vec::with_capacity(size),
        };
        request.message(1, |w| {
            w.buf.extend_from_slice(&self.resource);
            for (scope, spans) in scopes {
                w.message(2, |w| {
                    w.message(1, |w| w.scope(scope));
                    w.buf.extend_from_slice(spans);
                    w.string(3, scope.schema_url().unwrap_or_default());
                });
            }
            w.string(3, &self.schema_url);
        });
        request.buf
    }
}

/// Appends `span` to `spans` as one entry of a `ScopeSpans`' `spans` (field 2).
pub fn append_span(spans: &mut Vec<u8>, span: &SpanData) {
    let mut w = Writer {
        buf: std::mem::take(spans),
    };
    w.message(2, |w| w.span(span));
    *spans = w.buf;
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message as _;
    use std::borrow::Cow;
    use std::time::Duration;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            remote,
            TraceState::from_key_value(state.split(',').filter_map(|pair| pair.split_once('='))).unwrap(),
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope, attributes: Vec<KeyValue>) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_764_633_600_123_456_789);
        SpanData {
            span_context: context(
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                0xb7ad_6b71_6920_3331,
                true,
                false,
                "",
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_micros(26),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// The request as `opentelemetry-otlp` would have built it.
    fn reference(spans: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource)),
        }
    }

    fn every_kind_of_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("rpc.method", "auth.v1.AuthService/Login"),
            KeyValue::new("empty", ""),
            KeyValue::new("server.port", 50051_i64),
            KeyValue::new("negative", -3_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("ratio", 0.25_f64),
            KeyValue::new("nought", 0.0_f64),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new("strings", Value::Array(Array::String(vec!["a".into(), "".into()]))),
            KeyValue::new("none", Value::Array(Array::String(vec![]))),
            KeyValue::new("long", "x".repeat(300)),
        ]
    }

    #[test]
    fn the_bytes_are_the_message_the_sdk_conversion_builds() {
        let resource = Resource::builder()
            .with_service_name("authd")
            .with_attribute(KeyValue::new("deployment.environment.name", "test"))
            .with_schema_url([], "https://opentelemetry.io/schemas/1.45.0")
            .build();
        let authd = InstrumentationScope::builder("authd").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://example.test/schema")
            .with_attributes([KeyValue::new("scope.attr", 7_i64)])
            .build();

        let mut failed = span("auth.v1.AuthService/Login", &authd, every_kind_of_value());
        failed.status = Status::error("UNAVAILABLE");
        failed.span_context = context(1, 2, true, false, "vendor=abc,other=x");
        failed.parent_span_id = SpanId::from(0x1234);
        failed.parent_span_is_remote = true;
        failed.dropped_attributes_count = 3;
        failed.events.events.push(opentelemetry::trace::Event::new(
            "exception",
            UNIX_EPOCH + Duration::from_secs(1),
            vec![KeyValue::new("exception.type", "timeout")],
            1,
        ));
        failed.events.dropped_count = 2;
        failed.links.links.push(opentelemetry::trace::Link::new(
            context(3, 4, false, true, "k=v"),
            vec![KeyValue::new("link.attr", "x")],
            5,
        ));
        failed.links.dropped_count = 1;
        let mut ok = span(
            "SELECT users",
            &other,
            vec![KeyValue::new("db.system.name", "postgresql")],
        );
        ok.status = Status::Ok;
        ok.span_kind = SpanKind::Client;
        let mut unsampled = span("GET", &authd, vec![]);
        unsampled.span_context = context(5, 6, false, false, "");
        unsampled.span_kind = SpanKind::Internal;
        let before_epoch = SpanData {
            start_time: UNIX_EPOCH - Duration::from_secs(1),
            span_kind: SpanKind::Producer,
            ..span("mail.deliver", &authd, vec![])
        };
        let consumer = SpanData {
            span_kind: SpanKind::Consumer,
            ..span("x", &other, vec![])
        };
        let spans = vec![failed, ok, unsampled, before_epoch, consumer];

        let encoded = TraceRequests::new(&resource).encode(&spans);
        let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("a valid message");
        assert_eq!(decoded, reference(spans, &resource));
        assert_eq!(decoded.resource_spans[0].scope_spans.len(), 2, "{decoded:?}");
        // And the encoding is canonical: the generated types write the very same bytes.
        assert_eq!(decoded.encode_to_vec(), encoded);
    }

    #[test]
    fn lengths_of_every_size_are_written_in_full() {
        let resource = Resource::builder_empty().build();
        let scope = InstrumentationScope::builder("authd").build();
        for len in [0, 1, 100, 127, 128, 129, 200, 16_383, 16_384, 70_000, 2_100_000] {
            let spans = vec![span("s", &scope, vec![KeyValue::new("k", "y".repeat(len))])];
            let encoded = TraceRequests::new(&resource).encode(&spans);
            let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("a valid message");
            assert_eq!(decoded, reference(spans, &resource), "length {len}");
            assert_eq!(decoded.encode_to_vec(), encoded, "length {len}");
        }
    }

    #[test]
    fn an_empty_batch_is_the_resource_alone() {
        let resource = Resource::builder().with_service_name("authd").build();
        let encoded = TraceRequests::new(&resource).encode(&[]);
        let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
        assert_eq!(decoded, reference(vec![], &resource));
    }
}
