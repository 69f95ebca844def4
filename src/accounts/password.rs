//! argon2id hashing on the hasher's own low-priority threads, one per permit (security rule 1).

use crate::config::Argon2Params;
use crate::domain::Password;
use crate::error::{Error, Result};
use crate::telemetry::metrics::HashMetrics;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// The outcome of checking a presented password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the configured ones: store a fresh hash.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords. At most `concurrency` hashes run at once (one per core by
/// default), each on one of the hasher's own threads, so a login flood can neither block the
/// async workers nor exhaust memory.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    threads: HashThreads,
    /// Hashes computed or verified so far (tests check that refused input costs none).
    operations: Arc<AtomicU64>,
    /// Verified against when the user is unknown, so that costs the same time as a wrong password.
    dummy_hash: Arc<str>,
    metrics: HashMetrics,
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
        let dummy_hash = hash_with(&mut Scratch::default(), &params, &crate::crypto::random_token())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            threads: HashThreads::start(concurrency)?,
            operations: Arc::default(),
            dummy_hash: dummy_hash.into(),
            metrics: HashMetrics::default(),
        })
    }

    /// Records the wait for a hashing thread and the hash time in these instruments.
    pub fn with_metrics(mut self, metrics: HashMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub async fn hash(&self, password: &Password) -> Result<String> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move |scratch| hash_with(scratch, &params, password.expose()))
            .await?
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
            .run(move |scratch| {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Verified {
                        ok: false,
                        needs_rehash: false,
                    };
                };
                let ok = verify_with(scratch, &parsed, password.expose());
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

    /// Runs `work` on a hashing thread, holding a permit. The permit moves with the work, so a
    /// cancelled call (client gone, timeout) still counts until its hash is done.
    /// The wait (for a permit, then for the thread) and the hash are spans of their own.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut Scratch) -> T + Send + 'static) -> Result<T> {
        let queued = Instant::now();
        let waiting = tracing::info_span!("password_hash.wait");
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .instrument(waiting.clone())
            .await
            .map_err(Error::internal)?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        let caller = tracing::Span::current();
        // The exported parent (the call's server span) travels to the hashing thread too.
        let context = opentelemetry::Context::current();
        let metrics = self.metrics.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        self.threads.submit(Box::new(move |scratch: &mut Scratch| {
            let _permit = permit;
            drop(waiting);
            metrics.wait.record(queued.elapsed().as_secs_f64(), &[]);
            let started = Instant::now();
            let output = caller.in_scope(|| {
                let _context = context.attach();
                tracing::info_span!("password_hash").in_scope(|| work(scratch))
            });
            metrics.time.record(started.elapsed().as_secs_f64(), &[]);
            let _ = done.send(output);
        }))?;
        result.await.map_err(|_| Error::internal("a password hash failed"))
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The memory of argon2's blocks, kept by each hashing thread from one hash to the next: a hash
/// neither allocates nor faults in `AUTHD_ARGON2_MEMORY_KIB` of fresh pages, and the process holds
/// one such area per hashing thread, however many logins come.
#[derive(Default)]
struct Scratch(Vec<Block>);

impl Scratch {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

/// The threads that compute argon2 hashes, one per permit. They end when the last
/// [`PasswordHasher`] clone is dropped.
#[derive(Clone)]
struct HashThreads {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl HashThreads {
    fn start(count: usize) -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("authd-argon2".into())
                .spawn(move || {
                    lower_priority();
                    let mut scratch = Scratch::default();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking hash fails its own call (its sender is dropped), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut scratch)));
                    }
                })
                .map_err(Error::internal)?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::internal("the password hashing threads are gone"))
    }
}

/// Puts the calling (hashing) thread in the idle scheduling class (`SCHED_IDLE`, always
/// permitted): it runs only when no other thread wants the core, and any other thread that wakes
/// takes the core back at once, not at the next scheduler tick. A login flood then fills the cores
/// that are free without delaying introspection; when the cores are saturated by other calls,
/// logins wait (they are the calls that can).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            idle,
        ) {
            tracing::debug!(error = ?e, "could not lower the priority of a hashing thread");
        }
    }
}

/// One argon2id hash at `params`, on the calling thread (for benchmarks: the server always goes
/// through [`PasswordHasher`]).
pub fn hash_once(params: Argon2Params, password: &str) -> Result<String> {
    let params =
        Params::new(params.memory_kib, params.iterations, params.parallelism, None).map_err(Error::internal)?;
    hash_with(&mut Scratch::default(), &params, password)
}

/// An argon2id hash of `password` with a fresh salt, as a PHC string.
fn hash_with(scratch: &mut Scratch, params: &Params, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes).map_err(Error::internal)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            raw_salt,
            &mut out,
            scratch.blocks(params.block_count()),
        )
        .map_err(Error::internal)?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(Error::internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(Error::internal)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored hash, computed with the hash's own algorithm, version
/// and parameters; the outputs are compared in constant time.
fn verify_with(scratch: &mut Scratch, stored: &PasswordHash<'_>, password: &str) -> bool {
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(stored.algorithm), Params::try_from(stored)) else {
        return false;
    };
    let Ok(version) = stored.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let blocks = scratch.blocks(params.block_count());
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, blocks)
        .is_err()
    {
        return false;
    }
    Output::new(out).is_ok_and(|computed| computed == expected)
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

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 2, 2, None).unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        // A hash written by the crate's own API (as earlier releases stored them) verifies here...
        let salt = SaltString::generate(&mut OsRng);
        let theirs = reference.hash_password(b"hunter22", &salt).unwrap().to_string();
        let mut scratch = Scratch::default();
        assert!(verify_with(
            &mut scratch,
            &PasswordHash::new(&theirs).unwrap(),
            "hunter22"
        ));
        assert!(!verify_with(
            &mut scratch,
            &PasswordHash::new(&theirs).unwrap(),
            "hunter23"
        ));
        // ...and one written here verifies there, whatever the scratch held before.
        let ours = hash_with(&mut scratch, &params, "hunter22").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(b"hunter22", &parsed).is_ok());
        assert!(reference.verify_password(b"hunter23", &parsed).is_err());
        // An argon2i hash is checked as argon2i, not as argon2id.
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"hunter22", &salt)
            .unwrap()
            .to_string();
        assert!(verify_with(
            &mut scratch,
            &PasswordHash::new(&argon2i).unwrap(),
            "hunter22"
        ));
    }
}
