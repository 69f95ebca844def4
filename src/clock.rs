//! Time as a parameter: every rule asks a [`Clock`], never the system directly, so tests can move
//! time forward (expired tokens, grace periods) without sleeping.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The system clock plus an adjustable offset (zero in production).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, in whole microseconds: what Postgres stores, so that a value read back compares
    /// equal to the one written.
    pub fn now(&self) -> DateTime<Utc> {
        #[allow(clippy::disallowed_methods)]
        let now = Utc::now();
        (now + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))).trunc_subsecs(6)
    }

    /// Moves this clock (and every clone of it) forward; for tests.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
