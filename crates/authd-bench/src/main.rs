//! `authd-bench`: see the library's documentation, or `authd-bench --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match authd_bench::run(authd_bench::BenchArgs::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authd-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
