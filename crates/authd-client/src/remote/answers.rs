//! `Introspect` answers, cached for a short bounded time by the SHA-256 of the credential (the
//! only input of the answer: the verifier's own credential is fixed). Inactive answers are cached
//! too, so a flood of one bad token costs authd one call per interval.
//!
//! A cached answer is never used as is: every use re-checks it against the clock and the
//! revocation view, as a fresh local verification would.

use crate::identity::Identity;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub(crate) type Digest32 = [u8; 32];

/// The SHA-256 of a credential, the key of its cached answer.
pub(crate) fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// One answer of `Introspect`.
#[derive(Debug)]
pub(crate) struct Answer {
    /// `None` when authd said the credential is not active.
    pub identity: Option<Identity>,
    /// When the credential was issued (`iat`, seconds), for the user-wide revocation check.
    pub issued_at: i64,
    received: Instant,
}

impl Answer {
    pub fn new(identity: Option<Identity>, issued_at: i64) -> Self {
        Self {
            identity,
            issued_at,
            received: Instant::now(),
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest32, Arc<Answer>>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<Digest32>,
}

/// The bounded cache of answers.
pub(crate) struct Answers {
    inner: RwLock<Inner>,
    capacity: usize,
    ttl: Duration,
    /// Bumped by every [`Answers::forget_id`] and [`Answers::clear`]: an answer asked for before
    /// one of them may be out of date, and is not kept.
    generation: AtomicU64,
}

impl Answers {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: RwLock::default(),
            capacity,
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// Whether an answer for this digest is held, however old.
    pub fn holds(&self, digest: &Digest32) -> bool {
        self.inner
            .read()
            .expect("answer cache lock")
            .entries
            .contains_key(digest)
    }

    /// Read before asking authd; hand it to [`Answers::insert`] with the answer.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The answer for this digest if it is younger than the time to live.
    pub fn get(&self, digest: &Digest32) -> Option<Arc<Answer>> {
        let inner = self.inner.read().expect("answer cache lock");
        inner
            .entries
            .get(digest)
            .filter(|answer| answer.received.elapsed() < self.ttl)
            .cloned()
    }

    /// Keeps an answer asked for at `generation`, unless something was forgotten since.
    pub fn insert(&self, digest: Digest32, answer: Answer, generation: u64) -> Arc<Answer> {
        let answer = Arc::new(answer);
        if self.capacity == 0 || self.ttl.is_zero() {
            return answer;
        }
        let mut inner = self.inner.write().expect("answer cache lock");
        if self.generation() != generation {
            return answer;
        }
        if inner.entries.insert(digest, answer.clone()).is_none() {
            inner.order.push_back(digest);
        }
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.entries.remove(&oldest);
            }
        }
        answer
    }

    /// Drops every answer about the API key (or token) with this id, e.g. after its secret changed.
    pub fn forget_id(&self, id: &str) {
        let mut inner = self.inner.write().expect("answer cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        let Inner { entries, order } = &mut *inner;
        entries.retain(|_, answer| answer.identity.as_ref().is_none_or(|identity| identity.id != id));
        order.retain(|digest| entries.contains_key(digest));
    }

    /// Forgets every answer (after a resynchronisation, which may have missed a new secret).
    pub fn clear(&self) {
        let mut inner = self.inner.write().expect("answer cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        *inner = Inner::default();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.read().expect("answer cache lock").entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::TokenType;

    fn identity(id: &str) -> Identity {
        Identity {
            subject: uuid::Uuid::now_v7(),
            username: "u".into(),
            session: None,
            scopes: vec![],
            roles: vec![],
            client_id: "authd_x".into(),
            token_type: TokenType::ApiKey,
            id: id.into(),
            expires_at: None,
        }
    }

    #[test]
    fn answers_are_bounded_expire_and_can_be_forgotten() {
        let cache = Answers::new(2, Duration::from_secs(60));
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            cache.insert(
                digest(name),
                Answer::new(Some(identity(&i.to_string())), 0),
                cache.generation(),
            );
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&digest("a")).is_none(), "the oldest made room");
        assert!(cache.get(&digest("c")).is_some());
        let asked = cache.generation();
        cache.forget_id("2");
        assert!(cache.get(&digest("c")).is_none());
        assert!(cache.get(&digest("b")).is_some());
        // An answer asked for before a secret changed is not kept.
        cache.insert(digest("d"), Answer::new(Some(identity("2")), 0), asked);
        assert!(cache.get(&digest("d")).is_none());
        cache.clear();
        assert_eq!(cache.len(), 0);
        let short = Answers::new(8, Duration::from_millis(1));
        short.insert(digest("a"), Answer::new(None, 0), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&digest("a")).is_none(), "past its time to live");
        let off = Answers::new(0, Duration::from_secs(60));
        off.insert(digest("a"), Answer::new(None, 0), 0);
        assert_eq!(off.len(), 0);
    }
}
