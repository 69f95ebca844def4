//! `authd`: parse the command line, set up logging and telemetry, run, flush.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = authd::cli::Cli::parse();
    let telemetry = match cli
        .exported_traces()
        .map_err(anyhow::Error::from)
        .and_then(authd::telemetry::init)
    {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("authd: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = authd::cli::run(cli).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One clear line: the cause chain, never a backtrace.
            eprintln!("authd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
