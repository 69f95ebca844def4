//! `otlp-sink ADDR`: an OTLP/gRPC collector that takes the export requests authd sends, counts
//! them and their bytes, and answers success without decoding them. It stands in for a collector
//! on another machine: `scripts/bench.sh --telemetry` measures what export costs authd, so the
//! sink spends as little of the shared CPU as it can. On SIGTERM it prints what it received.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};

/// The services and the method each serves: traces and metrics.
const TRACES: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const METRICS: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";

/// Takes a message as its length only; answers the empty message (an export response with no
/// partial success).
#[derive(Default)]
struct Raw;

impl Codec for Raw {
    type Encode = ();
    type Decode = usize;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, (): (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        use bytes::Buf as _;
        let len = buf.remaining();
        buf.advance(len);
        Ok(Some(len))
    }
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// One of the two export services.
#[derive(Clone)]
struct Sink<const METRIC: bool>(Arc<Counts>);

impl<const METRIC: bool> NamedService for Sink<METRIC> {
    const NAME: &'static str = if METRIC { METRICS } else { TRACES };
}

impl<const METRIC: bool> UnaryService<usize> for Sink<METRIC> {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, Status>>;

    fn call(&mut self, request: tonic::Request<usize>) -> Self::Future {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.bytes.fetch_add(*request.get_ref() as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

impl<const METRIC: bool> tower_service::Service<http::Request<Body>> for Sink<METRIC> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            if !request.uri().path().ends_with("/Export") {
                return Ok(Status::unimplemented("only Export").into_http());
            }
            Ok(Grpc::new(Raw)
                .max_decoding_message_size(64 << 20)
                .unary(sink, request)
                .await)
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: otlp-sink ADDR"))?
        .parse()?;
    let traces = Arc::new(Counts::default());
    let metrics = Arc::new(Counts::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .add_service(Sink::<false>(traces.clone()))
        .add_service(Sink::<true>(metrics.clone()))
        .serve_with_shutdown(addr, async move {
            term.recv().await;
        })
        .await?;
    for (what, counts) in [("trace", &traces), ("metric", &metrics)] {
        println!(
            "otlp-sink: {} {what} export requests, {} bytes",
            counts.requests.load(Ordering::Relaxed),
            counts.bytes.load(Ordering::Relaxed)
        );
    }
    Ok(())
}
