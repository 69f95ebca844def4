//! The outermost layer around every gRPC service: each call is a server span named after its
//! method, continuing the caller's W3C trace, with the stable OpenTelemetry RPC attributes
//! (`rpc.system.name`, `rpc.method`, `rpc.response.status_code`, `error.type` when the status is
//! a server error, `server.address`/`server.port`; `client.address` is added by
//! [`super::authenticate`], which resolves it), and each call is measured in
//! `rpc.server.call.duration` and the in-flight count. The status is read where gRPC puts it:
//! in the response headers of a trailers-only answer, else in the trailers, so the span and the
//! measurement end when the last byte of the answer is sent (a stream's, too).

use crate::telemetry::metrics::CallMetrics;
use crate::telemetry::spans::ServerSpan;
use opentelemetry::KeyValue;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Methods outside authd's own table that are named in telemetry; any other is `_OTHER`.
const OTHER_KNOWN: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The methods named in telemetry: authd's own, the health and reflection services', and
/// `_OTHER` (last) for any other path (bounded cardinality).
pub fn methods() -> &'static [&'static str] {
    static METHODS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    METHODS.get_or_init(|| {
        super::authenticate::ACCESS
            .iter()
            .map(|(name, _)| *name)
            .chain(OTHER_KNOWN.iter().copied())
            .chain(["_OTHER"])
            .collect()
    })
}

/// The index in [`methods`] of a request path's method.
pub fn method_index(path: &str) -> usize {
    let method = path.strip_prefix('/').unwrap_or(path);
    let methods = methods();
    methods
        .iter()
        .position(|name| *name == method)
        .unwrap_or(methods.len() - 1)
}

/// The name of a gRPC status code, as `rpc.response.status_code` carries it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The codes a server reports as its own failure (the semantic conventions' list); the others
/// (a wrong password, a missing scope, bad input) are answers, not errors of the server.
pub fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from)
}

/// Wraps every gRPC service in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    calls: Arc<CallMetrics>,
}

impl ObserveLayer {
    pub fn new(calls: CallMetrics) -> Self {
        Self { calls: Arc::new(calls) }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    calls: Arc<CallMetrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Observe<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Unpin,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let index = method_index(path);
        let method = methods()[index];
        let name = if method == "_OTHER" { "grpc" } else { method };
        let mut attributes = vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", method),
        ];
        if method == "_OTHER" {
            let original: String = path.trim_start_matches('/').chars().take(128).collect();
            attributes.push(KeyValue::new("rpc.method_original", original));
        }
        if let Some(authority) = request.uri().authority() {
            let host: String = authority.host().chars().take(255).collect();
            attributes.push(KeyValue::new("server.address", host));
            if let Some(port) = authority.port_u16() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        let span = ServerSpan::start(crate::call_log_span!("rpc"), name, request.headers(), attributes);
        self.calls.rpc_active.enter(index);
        let future = {
            let _otel = span.context().map(|cx| cx.clone().attach());
            span.log.in_scope(|| self.inner.call(request))
        };
        ObservedCall {
            future,
            finish: Some(Finish {
                span,
                started: Instant::now(),
                method,
                index,
                calls: self.calls.clone(),
                header_status: None,
            }),
        }
    }
}

/// What ends a call: its status recorded on the span and in the measurements.
struct Finish {
    span: ServerSpan,
    started: Instant,
    method: &'static str,
    /// `method`'s index in [`methods`].
    index: usize,
    calls: Arc<CallMetrics>,
    /// The status of a trailers-only answer.
    header_status: Option<tonic::Code>,
}

impl Finish {
    fn done(self, code: tonic::Code) {
        let status = code_name(code);
        self.span
            .set_attribute(KeyValue::new("rpc.response.status_code", status));
        let mut labels = vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", self.method),
            KeyValue::new("rpc.response.status_code", status),
        ];
        if is_server_error(code) {
            self.span.failed(status);
            labels.push(KeyValue::new("error.type", status));
        }
        self.calls
            .rpc_duration
            .record(self.started.elapsed().as_secs_f64(), &labels);
        self.calls.rpc_active.leave(self.index);
        self.span.end();
    }
}

/// The call until its response headers.
pub struct ObservedCall<F> {
    future: F,
    finish: Option<Finish>,
}

impl<F, B, E> Future for ObservedCall<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(span) = this.finish.as_ref().map(|finish| &finish.span) else {
            panic!("ObservedCall polled after completion");
        };
        let result = {
            let _otel = span.context().map(|cx| cx.clone().attach());
            let _entered = span.log.enter();
            std::task::ready!(Pin::new(&mut this.future).poll(cx))
        };
        let Some(mut finish) = this.finish.take() else {
            panic!("ObservedCall polled after completion");
        };
        Poll::Ready(match result {
            Ok(response) => {
                finish.header_status = grpc_status(response.headers());
                Ok(response.map(|body| ObservedBody {
                    body,
                    finish: Some(finish),
                }))
            }
            Err(error) => {
                finish.done(tonic::Code::Unknown);
                Err(error)
            }
        })
    }
}

impl<F> Drop for ObservedCall<F> {
    /// A call dropped before its answer's headers (the client went away, or the deadline cut it
    /// short outside this layer) ends as cancelled: counted, measured and its span ended.
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.done(tonic::Code::Cancelled);
        }
    }
}

/// The answer's body, watched for the trailers that carry the status.
pub struct ObservedBody<B> {
    body: B,
    finish: Option<Finish>,
}

impl<B: http_body::Body + Unpin> http_body::Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(grpc_status),
            Some(Err(_)) => Some(Some(tonic::Code::Unknown)),
            None => Some(None),
        };
        if let Some(code) = ended
            && let Some(finish) = this.finish.take()
        {
            let code = code.or(finish.header_status).unwrap_or(tonic::Code::Unknown);
            finish.done(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    /// A trailers-only answer may never be polled; an answer dropped before its end was
    /// cancelled (the client left).
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            let code = finish.header_status.unwrap_or(tonic::Code::Cancelled);
            finish.done(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_name(path: &str) -> &'static str {
        methods()[method_index(path)]
    }

    #[test]
    fn methods_outside_the_known_set_are_other() {
        assert_eq!(method_name("/auth.v1.AuthService/Login"), "auth.v1.AuthService/Login");
        assert_eq!(
            method_name("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_name("/auth.v1.AuthService/Nope"), "_OTHER");
        assert_eq!(method_name("/x/y"), "_OTHER");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert!(is_server_error(tonic::Code::Unavailable));
        assert!(!is_server_error(tonic::Code::Unauthenticated));
    }
}
