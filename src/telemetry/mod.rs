//! Logs, traces and metrics. Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default
//! `info`), as text or, with `AUTHD_LOG_FORMAT=json`, one JSON object per line; a line written
//! during a call carries the call's `trace_id` and `span_id`. With a collector configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), authd's spans go there through a batch processor that never
//! holds up a call ([`batch`]), and [`Guard::shutdown`] flushes them. Metrics: [`Metrics`].

mod batch;
mod export;
pub mod metrics;
pub mod spans;
mod wire;

pub use metrics::Metrics;

use crate::config::OtlpProtocol;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Targets that would print query parameters (hashes of secrets) at debug level are held at
/// `info` whatever `RUST_LOG` says (security rule 10).
const CLAMPS: &[&str] = &["tokio_postgres=info", "diesel=info"];

/// `base` (an `EnvFilter` directive string) with the clamps above.
pub fn filter(base: &str) -> EnvFilter {
    CLAMPS.iter().fold(EnvFilter::new(base), |filter, clamp| {
        filter.add_directive(clamp.parse().expect("valid directive"))
    })
}

/// What the process exports as: `OTEL_SERVICE_NAME` (default `authd`), the attributes of
/// `OTEL_RESOURCE_ATTRIBUTES`, and the SDK's own.
pub fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name("authd").build()
    }
}

/// What the span exporter sees: authd's own spans, never events (a log line may name what a
/// span must not). Decided once per callsite, so the debug and trace events of the libraries
/// below (h2 has many per frame) stay disabled at no cost.
struct OwnSpans;

impl OwnSpans {
    fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_span()
            && meta.target().starts_with("authd")
            && meta.target() != spans::LOG_ONLY
            && *meta.level() <= tracing::Level::INFO
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for OwnSpans {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        Self::wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// Flushes exported spans when the server is done.
#[must_use = "dropping the guard does not flush the spans"]
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
}

impl Guard {
    /// Sends the spans still queued (waiting at most a few seconds for the collector).
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer else { return };
        // The processor's thread needs the runtime to send; this thread waits for it.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "spans still queued at shutdown may not have reached the collector");
        }
    }
}

/// Sets up logging and, with `traces`, span export. Must run inside the Tokio runtime.
pub fn init(traces: Option<OtlpProtocol>) -> anyhow::Result<Guard> {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let json = std::env::var("AUTHD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        let format = tracing_subscriber::fmt::format()
            .json()
            .with_current_span(true)
            .with_span_list(true);
        logs.json().event_format(spans::WithIds { inner: format, json }).boxed()
    } else {
        let format = tracing_subscriber::fmt::format();
        logs.event_format(spans::WithIds { inner: format, json }).boxed()
    };
    let mut ignored = Vec::new();
    let tracer = traces
        .map(|protocol| -> anyhow::Result<SdkTracerProvider> {
            let env = |name: &str| std::env::var(name).ok();
            let target = export::TraceTarget::from_env(protocol, &env)?;
            ignored.clone_from(&target.ignored);
            let processor = batch::Encoding::start(&target, batch::Settings::from_env(&env)?)?;
            // The sampler (`OTEL_TRACES_SAMPLER`, default parent-based always-on) and the limits
            // come from the environment, as the processor's `OTEL_BSP_*` did; the server spans and
            // their children share one sampler, one set of limits and one processor.
            let config = opentelemetry_sdk::trace::Config::default();
            spans::export_with(spans::Exporting {
                sampler: config.sampler.clone(),
                ids: opentelemetry_sdk::trace::RandomIdGenerator::default(),
                processor: processor.clone(),
                scope: opentelemetry::InstrumentationScope::builder("authd").build(),
                max_attributes: config.span_limits.max_attributes_per_span as usize,
            });
            Ok(SdkTracerProvider::builder()
                .with_resource(resource())
                .with_sampler(config.sampler)
                .with_span_limits(config.span_limits)
                .with_span_processor(processor)
                .build())
        })
        .transpose()?;
    let spans = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("authd"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(OwnSpans)
    });
    let result = tracing_subscriber::registry()
        .with(logs.with_filter(filter(&base)))
        .with(spans)
        .try_init();
    // A subscriber already set (e.g. by a test harness) is fine.
    drop(result);
    for setting in ignored {
        tracing::warn!("{setting}; the setting is ignored");
    }
    Ok(Guard { tracer })
}
