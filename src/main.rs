//! `authd`: parse the command line, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = authd::cli::Cli::parse();
    authd::telemetry::init();
    match authd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One clear line: the cause chain, never a backtrace.
            eprintln!("authd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
