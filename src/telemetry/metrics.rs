//! The instruments authd records, one set per server, read two ways: by a Prometheus scrape of
//! `/metrics` (rendered by `opentelemetry-prometheus` and the `prometheus` crate) and, when a
//! collector is configured, pushed over OTLP every `OTEL_METRIC_EXPORT_INTERVAL`. No label ever
//! holds a credential, an address of mail or an identifier: only method names, status codes,
//! rule names and kinds of mail.

use crate::config::OtlpProtocol;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bucket bounds (seconds) of call durations: an `Introspect` answered from the cache takes tens
/// of microseconds, a login tens of milliseconds.
const CALL_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) of password hashing and its queue.
const HASH_BOUNDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) of how late a revocation from another replica arrives.
const LAG_BOUNDS: [f64; 11] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The instruments of one server.
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    /// Observable instruments, kept for as long as the server.
    observed: Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
    pub calls: CallMetrics,
    pub hashing: HashMetrics,
    pub mail: MailMetrics,
    /// `authd.rate_limit.refusals`, by `rule`.
    pub rate_limit_refusals: Counter<u64>,
    /// `authd.audit.suspicious`: `suspicious.*` events recorded, by `kind`.
    pub suspicious_events: Counter<u64>,
    /// `authd.revocation.feed.lag`: from a revocation's record to its arrival here.
    pub feed_lag: Histogram<f64>,
}

/// Calls served, gRPC and HTTP.
#[derive(Clone)]
pub struct CallMetrics {
    /// `rpc.server.call.duration`, by `rpc.method` and `rpc.response.status_code`.
    pub rpc_duration: Histogram<f64>,
    /// `authd.rpc.server.active_calls`, by `rpc.method`.
    pub rpc_active: ActiveCalls,
    /// `http.server.request.duration`, by method, route and status.
    pub http_duration: Histogram<f64>,
}

/// Calls being served, by method: counted in atomics and read when metrics are collected. (An
/// SDK up-down counter costs two hashed lookups per reader for every call.)
#[derive(Clone)]
pub struct ActiveCalls {
    methods: &'static [&'static str],
    /// Per method: calls in flight, and whether it was ever called (only those are reported).
    counts: Arc<[(AtomicI64, AtomicBool)]>,
}

impl ActiveCalls {
    fn new(methods: &'static [&'static str]) -> Self {
        Self {
            methods,
            counts: methods.iter().map(|_| Default::default()).collect(),
        }
    }

    /// A call of `methods[method]` starts.
    pub fn enter(&self, method: usize) {
        if let Some((count, seen)) = self.counts.get(method) {
            count.fetch_add(1, Ordering::Relaxed);
            seen.store(true, Ordering::Relaxed);
        }
    }

    /// A call of `methods[method]` is over.
    pub fn leave(&self, method: usize) {
        if let Some((count, _)) = self.counts.get(method) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn observe(&self, observer: &dyn opentelemetry::metrics::AsyncInstrument<i64>) {
        for (name, (count, seen)) in self.methods.iter().zip(self.counts.iter()) {
            if seen.load(Ordering::Relaxed) {
                observer.observe(count.load(Ordering::Relaxed), &[KeyValue::new("rpc.method", *name)]);
            }
        }
    }
}

/// Password hashing: the wait for a hashing thread and the hash itself.
#[derive(Clone)]
pub struct HashMetrics {
    pub wait: Histogram<f64>,
    pub time: Histogram<f64>,
}

impl Default for HashMetrics {
    /// Instruments that record nothing (benchmarks and unit tests).
    fn default() -> Self {
        Self::on(&opentelemetry::metrics::noop::NoopMeterProvider::new().meter("authd"))
    }
}

impl HashMetrics {
    fn on(meter: &Meter) -> Self {
        Self {
            wait: histogram(
                meter,
                "authd.password_hash.queue_wait",
                "Time a password hash waited for a hashing thread.",
                &HASH_BOUNDS,
            ),
            time: histogram(
                meter,
                "authd.password_hash.duration",
                "Time one argon2id hash or verification took.",
                &HASH_BOUNDS,
            ),
        }
    }
}

/// The outbox and its delivery.
#[derive(Clone)]
pub struct MailMetrics {
    /// `authd.mail.delivered`, by `kind`.
    pub delivered: Counter<u64>,
    /// `authd.mail.delivery.failures`, by `kind` and `outcome` (`retry`, `abandoned`).
    pub failures: Counter<u64>,
    /// `authd.mail.outbox.depth`: mail not yet delivered nor abandoned.
    pub outbox_depth: Gauge<u64>,
}

fn histogram(meter: &Meter, name: &'static str, description: &'static str, bounds: &[f64]) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(bounds.to_vec())
        .build()
}

impl Metrics {
    /// The instruments, a Prometheus registry to scrape, and, with `export`, a periodic push
    /// to the collector; `methods` are the RPC names the in-flight count is kept for (by index).
    /// Must run inside the Tokio runtime when `export` is gRPC.
    pub fn new(export: Option<OtlpProtocol>, methods: &'static [&'static str]) -> anyhow::Result<Arc<Self>> {
        let registry = prometheus::Registry::new();
        let scrape = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|e| anyhow::anyhow!("Prometheus exporter: {e}"))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(super::resource())
            .with_reader(scrape);
        if let Some(protocol) = export {
            let exporter = super::export::metric_exporter(protocol)?;
            builder = builder.with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build());
        }
        let provider = builder.build();
        let meter = provider.meter("authd");
        let calls = CallMetrics {
            rpc_duration: histogram(
                &meter,
                "rpc.server.call.duration",
                "Duration of RPCs authd served.",
                &CALL_BOUNDS,
            ),
            rpc_active: ActiveCalls::new(methods),
            http_duration: histogram(
                &meter,
                "http.server.request.duration",
                "Duration of HTTP requests authd served.",
                &CALL_BOUNDS,
            ),
        };
        let mail = MailMetrics {
            delivered: meter
                .u64_counter("authd.mail.delivered")
                .with_description("Mail handed to the mail server (or written to the mail directory).")
                .build(),
            failures: meter
                .u64_counter("authd.mail.delivery.failures")
                .with_description("Mail deliveries that failed, by outcome: retry later or abandoned.")
                .build(),
            outbox_depth: meter
                .u64_gauge("authd.mail.outbox.depth")
                .with_description("Mail in the outbox not yet delivered nor abandoned.")
                .build(),
        };
        let active = calls.rpc_active.clone();
        let active = meter
            .i64_observable_up_down_counter("authd.rpc.server.active_calls")
            .with_description("RPCs being served now.")
            .with_callback(move |observer| active.observe(observer))
            .build();
        Ok(Arc::new(Self {
            hashing: HashMetrics::on(&meter),
            rate_limit_refusals: meter
                .u64_counter("authd.rate_limit.refusals")
                .with_description("Calls refused by a rate limit, by rule.")
                .build(),
            suspicious_events: meter
                .u64_counter("authd.audit.suspicious")
                .with_description("Suspicious activity recorded in the audit trail, by kind.")
                .build(),
            feed_lag: histogram(
                &meter,
                "authd.revocation.feed.lag",
                "Time from a revocation on another replica to its arrival here.",
                &LAG_BOUNDS,
            ),
            calls,
            mail,
            provider,
            registry,
            meter,
            observed: Mutex::new(vec![Box::new(active)]),
        }))
    }

    /// A gauge read when metrics are collected.
    pub fn gauge(
        &self,
        name: &'static str,
        description: &'static str,
        read: impl Fn() -> Vec<(u64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) {
        let gauge = self
            .meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| {
                for (value, attributes) in read() {
                    observer.observe(value, &attributes);
                }
            })
            .build();
        self.keep(gauge);
    }

    /// A monotonic count read when metrics are collected.
    pub fn counter(
        &self,
        name: &'static str,
        description: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let counter = self
            .meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(), &[]))
            .build();
        self.keep(counter);
    }

    /// A monotonic sum of seconds read when metrics are collected.
    pub fn seconds(
        &self,
        name: &'static str,
        description: &'static str,
        read: impl Fn() -> Duration + Send + Sync + 'static,
    ) {
        let counter = self
            .meter
            .f64_observable_counter(name)
            .with_unit("s")
            .with_description(description)
            .with_callback(move |observer| observer.observe(read().as_secs_f64(), &[]))
            .build();
        self.keep(counter);
    }

    fn keep(&self, instrument: impl std::any::Any + Send + Sync) {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(instrument));
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// Pushes what is left to the collector and stops the push.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(3)) {
            tracing::debug!(error = %e, "metrics shutdown");
        }
    }
}
