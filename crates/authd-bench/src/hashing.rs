//! Timing argon2id at the server's parameters, so the login target (cores ÷ one hash) is
//! computed from this machine's own figure.

use anyhow::Context;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::time::{Duration, Instant};

/// The argon2id parameters the server hashes with: `AUTHD_ARGON2_MEMORY_KIB`,
/// `AUTHD_ARGON2_ITERATIONS` and `AUTHD_ARGON2_PARALLELISM`, read as the server reads them, with
/// the server's defaults (OWASP's recommendation) when unset.
#[derive(Clone, Copy, Debug)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Params {
    pub fn from_env() -> anyhow::Result<Self> {
        let read = |name: &str, default: u32| -> anyhow::Result<u32> {
            match std::env::var(name) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}: `{text}` is not a number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Self {
            memory_kib: read("AUTHD_ARGON2_MEMORY_KIB", 12_288)?,
            iterations: read("AUTHD_ARGON2_ITERATIONS", 3)?,
            parallelism: read("AUTHD_ARGON2_PARALLELISM", 1)?,
        })
    }
}

/// How long one argon2id hash at `params` takes on the calling thread: the median of `rounds`,
/// reusing one memory area as the server's hashing threads do.
pub fn time_hash(params: Argon2Params, rounds: usize) -> anyhow::Result<Duration> {
    let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut blocks = vec![Block::default(); params.block_count()];
    let mut out = [0u8; 32];
    let mut hash = |password: &[u8]| {
        argon2
            .hash_password_into_with_memory(password, b"authd-bench-salt", &mut out, &mut blocks)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    };
    hash(b"warm-up")?;
    let mut times = Vec::with_capacity(rounds.max(1));
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        hash(b"correct horse battery staple")?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// How long one hash takes alone, and when `threads` hash at once (the slowest thread's median):
/// the cores share caches and memory bandwidth, so hashes at once are slower than one alone.
pub fn time_alone_and_together(
    params: Argon2Params,
    threads: usize,
    rounds: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let alone = time_hash(params, rounds)?;
    let together = std::thread::scope(|scope| {
        let timers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || time_hash(params, rounds)))
            .collect();
        timers
            .into_iter()
            .map(|t| t.join().expect("hash timer panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok((alone, together.into_iter().max().unwrap_or(alone)))
}

/// OWASP's argon2id parameter sets of equal strength (m KiB, t passes; p = 1), most memory
/// first; authd's default is m = 12288, t = 3 (chosen with these timings: docs/PERFORMANCE.md).
pub const OWASP_SETS: [(u32, u32); 5] = [(47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5)];
