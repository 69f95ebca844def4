//! argon2id hashing on a bounded blocking pool (security rule 1).

use crate::config::Argon2Params;
use crate::domain::Password;
use crate::error::{Error, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// The outcome of checking a presented password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the configured ones: store a fresh hash.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords. At most `concurrency` hashes run at once, each on a blocking
/// thread, so a login flood can neither block the async workers nor exhaust memory.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Hashes computed or verified so far (tests check that refused input costs none).
    operations: Arc<AtomicU64>,
    /// Verified against when the user is unknown, so that costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(params: Argon2Params, concurrency: usize) -> Result<Self> {
        let params =
            Params::new(params.memory_kib, params.iterations, params.parallelism, None).map_err(Error::internal)?;
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            concurrency
        };
        let dummy_hash = hash_blocking(&params, &crate::crypto::random_token())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            operations: Arc::default(),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<String> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_blocking(&params, password.expose())).await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is none.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verified> {
        let (phc, real) = match stored {
            Some(phc) => (phc.to_string(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let params = self.params.clone();
        let password = password.clone();
        let verified = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Verified {
                        ok: false,
                        needs_rehash: false,
                    };
                };
                let ok = argon2(&params)
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok();
                let current = Params::try_from(&parsed).ok();
                let needs_rehash = parsed.algorithm != argon2::ARGON2ID_IDENT
                    || current.is_none_or(|p| {
                        p.m_cost() != params.m_cost() || p.t_cost() != params.t_cost() || p.p_cost() != params.p_cost()
                    });
                Verified { ok, needs_rehash }
            })
            .await?;
        Ok(Verified {
            ok: verified.ok && real,
            needs_rehash: verified.needs_rehash && real,
        })
    }

    /// How many hashes were computed or verified since start.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// Runs `work` on a blocking thread holding a permit. The permit moves with the work, so a
    /// cancelled call (client gone, timeout) still counts until its hash is done.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = self.permits.clone().acquire_owned().await.map_err(Error::internal)?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .await
        .map_err(Error::internal)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let cheap = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(cheap, 1).unwrap();
        let pw = Password::parse("correct horse", "password").unwrap();
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            hasher.verify(&pw, Some(&hash)).await.unwrap(),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        let wrong = Password::parse("wrong horse", "password").unwrap();
        assert!(!hasher.verify(&wrong, Some(&hash)).await.unwrap().ok);
        assert!(
            !hasher.verify(&pw, None).await.unwrap().ok,
            "the dummy hash never matches"
        );
        let stronger = PasswordHasher::new(
            Argon2Params {
                memory_kib: 128,
                iterations: 1,
                parallelism: 1,
            },
            1,
        )
        .unwrap();
        assert_eq!(
            stronger.verify(&pw, Some(&hash)).await.unwrap(),
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }
}
