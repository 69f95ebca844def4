//! The answer log: one JSON line per answer, health sample, fault, delivered mail and replica
//! log scan. It names credentials by numbers the harness gives them, never by their secrets.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An RPC and its answer.
    Call,
    /// A replica's gRPC health, sampled.
    Health,
    /// A fault, from its start to its end.
    Fault,
    /// A mail the test's SMTP server accepted.
    Mail,
    /// A replica's log, scanned after the run: `count` panics in it.
    Panics,
}

/// One line. Times are microseconds since the run began.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Option<Kind>,
    /// The RPC (`login`, `introspect`…), the fault, or the mail's kind.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<usize>,
    pub t0: u64,
    pub t1: u64,
    /// The gRPC code's name (`OK`, `UNAVAILABLE`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The credentials the call concerns: introspected, or revoked by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creds: Vec<u64>,
    /// `Introspect`'s verdict; health: SERVING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The refresh token a `Refresh` spends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<u64>,
    /// The mailbox a mail request or a delivered mail concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Call)
    }

    pub fn is_ok(&self) -> bool {
        self.code.as_deref() == Some("OK")
    }
}

/// The run's log, written as it goes (a line per entry) and kept for the checker.
#[derive(Clone)]
pub struct Log {
    start: Instant,
    inner: Arc<Mutex<(std::io::BufWriter<std::fs::File>, Vec<Entry>)>>,
}

impl Log {
    pub fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self {
            start: Instant::now(),
            inner: Arc::new(Mutex::new((std::io::BufWriter::new(file), Vec::new()))),
        })
    }

    /// Microseconds since the run began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn push(&self, entry: Entry) {
        let line = serde_json::to_string(&entry).expect("serialisable");
        let mut inner = self.inner.lock().expect("log lock");
        // A line lost to a full disk would only weaken the check; say so once at the end.
        let _ = writeln!(inner.0, "{line}");
        inner.1.push(entry);
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut inner = self.inner.lock().expect("log lock");
        let _ = inner.0.flush();
        inner.1.clone()
    }
}

/// Reads a log written by [`Log`].
pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| serde_json::from_str(line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1)))
        .collect()
}
