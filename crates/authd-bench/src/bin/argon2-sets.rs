//! `argon2-sets`: times OWASP's argon2id parameter sets of equal strength on this machine, one
//! hash alone and one per core at once, and prints the logins per second each allows, so that
//! the default (`AUTHD_ARGON2_MEMORY_KIB`, `AUTHD_ARGON2_ITERATIONS`) can be chosen by measure.
//!
//!     argon2-sets [ROUNDS]      (default 9 hashes per timing; the median counts)

use authd_bench::hashing::{Argon2Params, OWASP_SETS, time_alone_and_together};

fn main() -> anyhow::Result<()> {
    let rounds = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("ROUNDS: `{text}` is not a number"))?,
        None => 9,
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("argon2id, p = 1, {cores} cores, median of {rounds} hashes per timing");
    println!();
    println!("| m (KiB) | t | one alone | {cores} at once | slowdown at once | hashes/s, all cores |");
    println!("|--------:|--:|----------:|----------:|-----------------:|--------------------:|");
    for (memory_kib, iterations) in OWASP_SETS {
        let params = Argon2Params {
            memory_kib,
            iterations,
            parallelism: 1,
        };
        let (alone, together) = time_alone_and_together(params, cores, rounds)?;
        println!(
            "| {memory_kib:>7} | {iterations} | {:>6.1} ms | {:>6.1} ms | {:>15.2}× | {:>19.1} |",
            alone.as_secs_f64() * 1e3,
            together.as_secs_f64() * 1e3,
            together.as_secs_f64() / alone.as_secs_f64(),
            cores as f64 / together.as_secs_f64(),
        );
    }
    Ok(())
}
