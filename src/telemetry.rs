//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text or, with
//! `AUTHD_LOG_FORMAT=json`, one JSON object per line.

use tracing_subscriber::EnvFilter;

/// Targets that would print query parameters (hashes of secrets) at debug level are held at
/// `info` whatever `RUST_LOG` says (security rule 10).
const CLAMPS: &[&str] = &["tokio_postgres=info", "diesel=info"];

/// `base` (an `EnvFilter` directive string) with the clamps above.
pub fn filter(base: &str) -> EnvFilter {
    CLAMPS.iter().fold(EnvFilter::new(base), |filter, clamp| {
        filter.add_directive(clamp.parse().expect("valid directive"))
    })
}

pub fn init() {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&base))
        .with_writer(std::io::stderr);
    let result = if std::env::var("AUTHD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already set (e.g. by a test harness) is fine.
    drop(result);
}
