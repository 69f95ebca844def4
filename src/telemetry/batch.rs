//! The span processor. A span that ends is written as OTLP protobuf ([`wire`]) on the thread
//! that ended it, appended to a shared batch, and dropped there; a thread of its own sends
//! each batch as one export request. It keeps the batch span processor's rules: a bounded
//! queue that drops spans when full and never holds a call up, a batch sent when it is full or
//! when `OTEL_BSP_SCHEDULE_DELAY` has passed, and what is queued sent on shutdown. The SDK's
//! own processor hands every `SpanData` to its thread through a channel, and its exporter
//! builds the generated message types before encoding them; on the cheapest call that was
//! most of what exporting a span cost.

use super::export::{Failures, TraceTarget, Transport};
use super::wire::{self, TraceRequests};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The batch processor's settings, from `OTEL_BSP_*` (the specification's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
    pub export_timeout: Duration,
}

impl Settings {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            match env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(value) => value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name} must be a whole number, not {value:?}")),
            }
        };
        let positive = |name: &str, default: u64| -> anyhow::Result<u64> {
            let value = number(name, default)?;
            anyhow::ensure!(value > 0, "{name} must be at least 1");
            Ok(value)
        };
        let max_queue = positive("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let max_batch = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?;
        Ok(Self {
            max_queue: usize::try_from(max_queue)?,
            // As the SDK has it: a batch is never larger than the queue.
            max_batch: usize::try_from(max_batch.min(max_queue))?,
            delay: Duration::from_millis(positive("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            export_timeout: Duration::from_millis(positive("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?),
        })
    }
}

/// Spans of one scope, written and waiting.
struct Chunk {
    scope: InstrumentationScope,
    spans: Vec<u8>,
    count: usize,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Spans in `chunks`, and those taken from it that are being sent.
    queued: usize,
    /// Flushes asked for, and the last one done.
    flushes_wanted: u64,
    flushes_done: u64,
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the sender: a batch is full, a flush or the shutdown is asked for.
    work: Condvar,
    /// Wakes those waiting for a flush or the shutdown.
    done: Condvar,
    requests: Mutex<Arc<TraceRequests>>,
    settings: Settings,
    dropped: AtomicU64,
    /// Shutting down (or the sender gone): nothing more is queued. Set with the queue's lock
    /// held, so the sender sees it when it wakes.
    stopping: AtomicBool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The most a new chunk reserves up front; a larger one grows as it fills.
const CHUNK_RESERVE: usize = 1 << 20;

thread_local! {
    /// Where a span is written before it joins the queue, so the lock is held for a copy only.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// A span processor that writes spans as they end and sends them in batches to a collector.
/// Clones share one queue and sending thread (the SDK's tracer holds one, the server spans
/// another).
#[derive(Clone)]
pub struct Encoding {
    shared: Arc<Shared>,
    sender: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoding")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Encoding {
    /// Starts the sending thread, which sends from a runtime of its own (so that a send under
    /// way when the server's runtime stops still ends cleanly).
    pub fn start(target: &TraceTarget, settings: Settings) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            requests: Mutex::new(Arc::new(TraceRequests::default())),
            settings,
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let timeout = target.timeout.min(settings.export_timeout);
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let sender = {
            let shared = Arc::clone(&shared);
            let target = target.clone();
            std::thread::Builder::new()
                .name("authd-span-export".into())
                .spawn(move || {
                    let _finish = Finish(&shared);
                    let made = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(anyhow::Error::from)
                        .and_then(|runtime| {
                            // A gRPC channel is made inside the runtime it runs on.
                            let transport = runtime.block_on(async { Transport::new(&target) })?;
                            Ok((runtime, transport))
                        });
                    match made {
                        Ok((runtime, transport)) => {
                            let _ = ready.send(Ok(()));
                            send_batches(&shared, &transport, &runtime, timeout);
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                        }
                    }
                })?
        };
        started
            .recv()
            .map_err(|_| anyhow::anyhow!("the span sender stopped while starting"))??;
        Ok(Self {
            shared,
            sender: Arc::new(Mutex::new(Some(sender))),
        })
    }

    /// Whether the processor is shutting down (or gone): what ends from now on is not sent.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Waits on `done` until `finished` holds or `timeout` passes.
    fn wait_for(&self, timeout: Duration, finished: impl Fn(&Queue) -> bool) -> OTelSdkResult {
        let queue = self.shared.queue();
        let (queue, waited) = self
            .shared
            .done
            .wait_timeout_while(queue, timeout, |queue| !finished(queue))
            .unwrap_or_else(|p| p.into_inner());
        drop(queue);
        if waited.timed_out() {
            Err(OTelSdkError::Timeout(timeout))
        } else {
            Ok(())
        }
    }
}

impl SpanProcessor for Encoding {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() || self.is_stopping() {
            return;
        }
        let settings = self.shared.settings;
        let queue_up = |scratch: &mut Vec<u8>| {
            scratch.clear();
            wire::append_span(scratch, &span);
            let mut queue = self.shared.queue();
            if self.is_stopping() {
                return;
            }
            if queue.queued >= settings.max_queue {
                drop(queue);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let fits = queue
                .chunks
                .back()
                .is_some_and(|chunk| chunk.count < settings.max_batch && chunk.scope == span.instrumentation_scope);
            if !fits {
                queue.chunks.push_back(Chunk {
                    scope: span.instrumentation_scope.clone(),
                    spans: Vec::with_capacity(scratch.len().saturating_mul(settings.max_batch).min(CHUNK_RESERVE)),
                    count: 0,
                });
            }
            let chunk = queue.chunks.back_mut().expect("a chunk was just made");
            chunk.spans.extend_from_slice(scratch);
            chunk.count += 1;
            let full = chunk.count == settings.max_batch;
            queue.queued += 1;
            drop(queue);
            if full {
                self.shared.work.notify_one();
            }
        };
        // A span that ends while its thread is being torn down gets a buffer of its own.
        if SCRATCH.try_with(|scratch| queue_up(&mut scratch.borrow_mut())).is_err() {
            queue_up(&mut Vec::new());
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let target = {
            let mut queue = self.shared.queue();
            if queue.stopped {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            queue.flushes_wanted += 1;
            queue.flushes_wanted
        };
        self.shared.work.notify_one();
        self.wait_for(self.shared.settings.export_timeout, |queue| {
            queue.flushes_done >= target || queue.stopped
        })
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        {
            let _queue = self.shared.queue();
            if self.shared.stopping.swap(true, Ordering::Relaxed) {
                return Err(OTelSdkError::AlreadyShutdown);
            }
        }
        self.shared.work.notify_one();
        self.wait_for(timeout, |queue| queue.stopped)?;
        if let Some(sender) = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = sender.join();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        *self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(TraceRequests::new(resource));
    }
}

/// Marks the processor stopped when the sending thread ends, however it ends (a panic too), so
/// that spans are no longer queued and nobody waits for it.
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        self.0.stopping.store(true, Ordering::Relaxed);
        queue.stopped = true;
        queue.chunks.clear();
        queue.queued = 0;
        drop(queue);
        self.0.done.notify_all();
    }
}

/// Reports of dropped spans are at most this frequent.
const DROPS_REPORTED_EVERY: Duration = Duration::from_secs(60);

/// The sending thread: waits for a full batch, the delay, a flush or the shutdown, then sends
/// what is due, one request per chunk.
fn send_batches(shared: &Shared, transport: &Transport, runtime: &tokio::runtime::Runtime, timeout: Duration) {
    // What sending does is not itself traced.
    let _quiet = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let settings = shared.settings;
    let failures = Failures::new("spans");
    let mut reported_drops = 0;
    let mut drops_reported_at: Option<Instant> = None;
    let mut last_send = Instant::now();
    loop {
        let mut queue = shared.queue();
        let (due, flush, stopping) = loop {
            let stopping = shared.stopping.load(Ordering::Relaxed);
            let flush = queue.flushes_wanted > queue.flushes_done;
            let late = last_send.elapsed() >= settings.delay;
            let full = queue
                .chunks
                .front()
                .is_some_and(|chunk| chunk.count >= settings.max_batch);
            if stopping || flush || full || (late && !queue.chunks.is_empty()) {
                let all = stopping || flush || late;
                let due: Vec<Chunk> = if all {
                    queue.chunks.drain(..).collect()
                } else {
                    let full = queue
                        .chunks
                        .iter()
                        .take_while(|chunk| chunk.count >= settings.max_batch)
                        .count();
                    queue.chunks.drain(..full).collect()
                };
                // The spans stay counted against OTEL_BSP_MAX_QUEUE_SIZE until sent, so a slow
                // collector holds at most that many in memory, queued and in flight together.
                break (due, queue.flushes_wanted, stopping);
            }
            if late {
                last_send = Instant::now();
            }
            let wait = settings.delay.saturating_sub(last_send.elapsed());
            queue = shared
                .work
                .wait_timeout(queue, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(queue);
        let requests = Arc::clone(&shared.requests.lock().unwrap_or_else(|p| p.into_inner()));
        for chunk in due {
            let body = requests.request(&chunk.scope, &chunk.spans);
            let count = chunk.count;
            drop(chunk);
            let sent = runtime.block_on(transport.send(body, timeout));
            failures.note(&sent);
            let mut queue = shared.queue();
            queue.queued = queue.queued.saturating_sub(count);
        }
        last_send = Instant::now();
        let dropped = shared.dropped.load(Ordering::Relaxed);
        let quiet = drops_reported_at.is_some_and(|at| at.elapsed() < DROPS_REPORTED_EVERY);
        if dropped > reported_drops && (!quiet || stopping) {
            drops_reported_at = Some(Instant::now());
            tracing::warn!(
                dropped = dropped - reported_drops,
                "OpenTelemetry span queue full (OTEL_BSP_MAX_QUEUE_SIZE); spans dropped"
            );
            reported_drops = dropped;
        }
        let mut queue = shared.queue();
        queue.flushes_done = queue.flushes_done.max(flush);
        if stopping && queue.chunks.is_empty() {
            queue.stopped = true;
        }
        let stopped = queue.stopped;
        drop(queue);
        shared.done.notify_all();
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn settings_have_the_specifications_defaults_and_read_the_variables() {
        assert_eq!(
            settings(&[]).unwrap(),
            Settings {
                max_queue: 2048,
                max_batch: 512,
                delay: Duration::from_secs(5),
                export_timeout: Duration::from_secs(30),
            }
        );
        let set = settings(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_SCHEDULE_DELAY", " 250 "),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
        ])
        .unwrap();
        assert_eq!(
            (set.max_queue, set.max_batch),
            (100, 100),
            "a batch is never larger than the queue"
        );
        assert_eq!(set.delay, Duration::from_millis(250));
        assert_eq!(set.export_timeout, Duration::from_secs(1));
        let bad = settings(&[("OTEL_BSP_SCHEDULE_DELAY", "5s")]).unwrap_err().to_string();
        assert!(bad.contains("OTEL_BSP_SCHEDULE_DELAY"), "{bad}");
        for name in [
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BSP_SCHEDULE_DELAY",
            "OTEL_BSP_EXPORT_TIMEOUT",
        ] {
            let bad = settings(&[(name, "0")]).unwrap_err().to_string();
            assert!(bad.contains(name) && bad.contains("at least 1"), "{bad}");
        }
    }
}
