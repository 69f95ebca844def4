//! The OTLP exporters, and what a collector that is gone costs: a warning now and then.

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

/// The span exporter for `protocol`. A gRPC exporter must be built inside the Tokio runtime:
/// its channel lives there.
pub fn span_exporter(protocol: OtlpProtocol) -> anyhow::Result<Reported<opentelemetry_otlp::SpanExporter>> {
    otlp_exporter!(opentelemetry_otlp::SpanExporter, protocol, "spans")
}

/// The metric exporter for `protocol` (cumulative, as Prometheus counts).
pub fn metric_exporter(protocol: OtlpProtocol) -> anyhow::Result<Reported<opentelemetry_otlp::MetricExporter>> {
    otlp_exporter!(opentelemetry_otlp::MetricExporter, protocol, "metrics")
}

/// An exporter whose failures reach the log, once a minute at most (the SDK's own reports are
/// compiled out), and whose recovery is logged once.
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    what: &'static str,
    last_report: Mutex<Option<Instant>>,
}

impl<E> Reported<E> {
    fn new(inner: E, what: &'static str) -> Self {
        Self {
            inner,
            what,
            last_report: Mutex::new(None),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
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

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Reported<E>
{
    async fn export(&self, metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.note(&result);
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
