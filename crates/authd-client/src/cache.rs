//! Access tokens already verified, so that a token presented again (a gateway introspects the same
//! token on every request it forwards) skips the signature check and the JSON parsing.
//!
//! An entry is keyed by the SHA-256 of the whole token: only the very same bytes find it. It holds
//! the claims and the `kid` that verified them, and it is used only while that key is still
//! published and the claims' times still hold against the clock, exactly as a fresh verification
//! would check them. Revocation is not cached: callers consult the revocation view on every call.

use crate::keys::KeySet;
use crate::verify::{AccessClaims, Rejection, TokenRules};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The capacity the server uses unless `AUTHD_TOKEN_CACHE_SIZE` says otherwise.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Independent locks, so concurrent calls for different tokens rarely meet.
const SHARDS: usize = 16;

type TokenDigest = [u8; 32];

#[derive(Debug)]
struct Entry {
    claims: Arc<AccessClaims>,
    kid: Box<str>,
}

/// One shard: entries, and their insertion order for eviction (oldest first).
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<TokenDigest, Entry>,
    order: VecDeque<TokenDigest>,
}

/// A bounded cache of verified access tokens (`AUTHD_TOKEN_CACHE_SIZE` entries; 0 turns it off).
/// When a shard is full its oldest entry makes room, so memory stays bounded however many
/// distinct tokens arrive.
#[derive(Debug)]
pub struct VerifiedTokens {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl VerifiedTokens {
    /// An empty cache of about `capacity` entries (rounded up to whole shards); 0 turns it off.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The claims of a valid access token (signature, key, issuer, audience and times), from the
    /// cache when these very bytes were verified before.
    pub fn verify(
        &self,
        verifier: &TokenRules,
        keys: &KeySet,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<AccessClaims>, Rejection> {
        if self.per_shard == 0 {
            return verifier.verify(keys, token, now).map(Arc::new);
        }
        let digest: TokenDigest = Sha256::digest(token.as_bytes()).into();
        let shard = &self.shards[usize::from(digest[0]) % SHARDS];
        if let Some(entry) = shard.read().expect("token cache lock").entries.get(&digest) {
            // A key no longer published, or claims out of their time window, take the full path,
            // which rejects the token with the precise reason.
            // The entry must also be one this verifier would accept (a cache shared by verifiers
            // of other issuers or audiences must not answer for them).
            if keys.contains(&entry.kid)
                && verifier.accepts_claims(&entry.claims)
                && crate::verify::check_times(&entry.claims, now).is_ok()
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(entry.claims.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (claims, kid) = verifier.verify_with_kid(keys, token, now)?;
        let claims = Arc::new(claims);
        let mut shard = shard.write().expect("token cache lock");
        let entry = Entry {
            claims: claims.clone(),
            kid: kid.into(),
        };
        if shard.entries.insert(digest, entry).is_none() {
            shard.order.push_back(digest);
            while shard.order.len() > self.per_shard {
                if let Some(oldest) = shard.order.pop_front() {
                    shard.entries.remove(&oldest);
                }
            }
        }
        Ok(claims)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("token cache lock").entries.len())
            .sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls answered from the cache, and calls that verified a signature, since start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Signer;
    use crate::verify::LEEWAY_SECS;

    #[test]
    fn a_repeated_token_is_answered_from_the_cache_until_it_expires() {
        let signer = Signer::new();
        let cache = VerifiedTokens::new(64);
        let now = Utc::now();
        let token = signer.token(now);
        let first = cache.verify(&signer.verifier(), &signer.keys(), &token, now).unwrap();
        let again = cache.verify(&signer.verifier(), &signer.keys(), &token, now).unwrap();
        assert_eq!(first, again);
        assert_eq!(cache.hits_and_misses(), (1, 1));
        // A verifier for another audience sharing the cache gets no answer for this token.
        let mut other = signer.verifier();
        other.audience = "another-api".into();
        assert_eq!(
            cache.verify(&other, &signer.keys(), &token, now),
            Err(Rejection::WrongAudience)
        );
        // Past its lifetime the cached entry is not used: the full check says why.
        let later = now + chrono::Duration::seconds(900 + LEEWAY_SECS);
        assert_eq!(
            cache.verify(&signer.verifier(), &signer.keys(), &token, later),
            Err(Rejection::Expired)
        );
        // A token that differs in one byte is not the cached one.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(
            cache
                .verify(&signer.verifier(), &signer.keys(), &tampered, now)
                .is_err()
        );
    }

    #[test]
    fn a_key_no_longer_published_ends_its_cached_tokens() {
        let old = Signer::new();
        let now = Utc::now();
        let cache = VerifiedTokens::new(64);
        let token = old.token(now);
        cache.verify(&old.verifier(), &old.keys(), &token, now).unwrap();
        let newer = Signer::new();
        assert_eq!(
            cache.verify(&old.verifier(), &newer.keys(), &token, now),
            Err(Rejection::UnknownKey)
        );
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let signer = Signer::new();
        let (verifier, keys) = (signer.verifier(), signer.keys());
        let cache = VerifiedTokens::new(SHARDS * 2);
        let now = Utc::now();
        for _ in 0..SHARDS * 20 {
            cache.verify(&verifier, &keys, &signer.token(now), now).unwrap();
        }
        assert!(cache.len() <= SHARDS * 2, "{} entries", cache.len());
        let off = VerifiedTokens::new(0);
        off.verify(&verifier, &keys, &signer.token(now), now).unwrap();
        assert!(off.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// However many distinct tokens arrive, the cache holds at most its capacity (rounded up
        /// to whole shards), and the newest token is always answered from it.
        #[test]
        fn eviction_keeps_the_cache_within_its_capacity(capacity in 0usize..48, tokens in 0usize..120) {
            let signer = Signer::new();
            let (verifier, keys) = (signer.verifier(), signer.keys());
            let cache = VerifiedTokens::new(capacity);
            let now = Utc::now();
            let mut last = None;
            for _ in 0..tokens {
                let t = signer.token(now);
                cache.verify(&verifier, &keys, &t, now).unwrap();
                last = Some(t);
            }
            proptest::prop_assert!(cache.len() <= capacity.div_ceil(SHARDS) * SHARDS);
            proptest::prop_assert!(cache.len() <= tokens);
            if let (Some(t), true) = (last, capacity > 0) {
                let (hits, _) = cache.hits_and_misses();
                cache.verify(&verifier, &keys, &t, now).unwrap();
                proptest::prop_assert_eq!(cache.hits_and_misses().0, hits + 1);
            }
        }
    }
}
