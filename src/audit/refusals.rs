//! Rate-limit refusals, counted in memory and recorded as one summary event per limit and subject
//! per minute: a flood over a limit must not become one INSERT per refused call.

use crate::identity::ClientInfo;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Distinct (limit, subject) pairs held between two flushes; past it, refusals of new pairs are
/// counted together under one overflow entry.
const MAX_SUBJECTS: usize = 10_000;

/// Refusals of one limit for one subject since the last flush.
#[derive(Debug, Clone)]
pub struct RefusalSummary {
    pub limit: &'static str,
    /// The account concerned, when the subject is one.
    pub user_id: Option<Uuid>,
    /// The client of the first refusal.
    pub client: ClientInfo,
    pub count: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// The refusals not yet recorded, keyed by limit and a hash of the subject (the subject may be a
/// typed identifier, which is never kept).
#[derive(Default)]
pub struct Refusals {
    pending: Mutex<HashMap<(&'static str, [u8; 16]), RefusalSummary>>,
}

impl Refusals {
    pub fn note(
        &self,
        limit: &'static str,
        subject: &str,
        user_id: Option<Uuid>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) {
        let mut pending = self.pending.lock().expect("refusals lock");
        let mut key = (limit, subject_hash(subject));
        if pending.len() >= MAX_SUBJECTS && !pending.contains_key(&key) {
            key = ("overflow", [0; 16]);
        }
        let summary = pending.entry(key).or_insert_with(|| RefusalSummary {
            limit: key.0,
            user_id,
            client: client.clone(),
            count: 0,
            first_at: now,
            last_at: now,
        });
        summary.count += 1;
        summary.last_at = now;
    }

    /// Everything noted since the last call.
    pub fn take(&self) -> Vec<RefusalSummary> {
        let mut pending = self.pending.lock().expect("refusals lock");
        std::mem::take(&mut *pending).into_values().collect()
    }
}

fn subject_hash(subject: &str) -> [u8; 16] {
    let digest = Sha256::digest(subject.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_per_limit_and_subject() {
        let refusals = Refusals::default();
        let now = Utc::now();
        for _ in 0..30 {
            refusals.note("login:account", "alice", None, &ClientInfo::default(), now);
        }
        refusals.note("login:address", "10.0.0.1", None, &ClientInfo::default(), now);
        let mut taken = refusals.take();
        taken.sort_by_key(|s| s.count);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[1].count, 30);
        assert!(refusals.take().is_empty());
    }
}
