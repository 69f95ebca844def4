//! The `authd` command line.

use crate::app::{App, key_publish_window};
use crate::clock::Clock;
use crate::config::{self, Settings};
use crate::startup::{Server, shutdown_signal};
use crate::store;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "authd",
    version,
    about = "Authentication service over gRPC: accounts, sessions, API keys, JWTs and introspection."
)]
pub struct Cli {
    /// A TOML file with the same keys as the AUTHD_* variables, in lower case (the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC server (applies pending migrations first unless --no-migrate).
    Serve {
        /// Refuse to start when the schema is behind instead of migrating it.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations (safe to run repeatedly).
    Migrate,
    /// Manage the token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage API keys.
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Ask a running authd whether it is serving (exit 0) or not (exit 1).
    Healthcheck {
        /// The gRPC address to ask; defaults to AUTHD_GRPC_ADDR.
        #[arg(long)]
        addr: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a new signing key and retire the current one (it stays published until its tokens expire).
    Rotate,
    /// List signing keys with their state.
    List,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create an administrator; the password is read from AUTHD_ADMIN_PASSWORD or standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Defaults to one derived from the email address.
        #[arg(long)]
        username: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create an API key for a user and print its secret (shown only this once).
    Create {
        /// Email of the owner.
        #[arg(long)]
        owner: String,
        #[arg(long)]
        label: String,
        /// A scope to grant; repeat for several (e.g. --scope tokens:introspect).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_file = cli.config.as_deref();
    match cli.command {
        Command::Serve { no_migrate } => {
            let settings = Settings::load(config_file)?;
            let application = Server::build(settings, Clock::system(), !no_migrate).await?;
            application.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let url = config::database_url(config_file)?;
            let applied = store::migrate(url.expose()).await?;
            if applied.is_empty() {
                println!("schema is up to date");
            } else {
                println!("applied {} migration(s): {}", applied.len(), applied.join(", "));
            }
            Ok(())
        }
        Command::Keys { command } => {
            let settings = Settings::load(config_file)?;
            keys(settings, command).await
        }
        Command::Users {
            command: UsersCommand::CreateAdmin { email, username },
        } => {
            let password = read_password()?;
            let app = App::build(Settings::load(config_file)?, Clock::system()).await?;
            if app
                .accounts
                .ensure_admin(&email, username.as_deref(), &password)
                .await?
            {
                println!("created admin {email}");
            } else {
                println!("a user with email {email} already exists; nothing changed");
            }
            Ok(())
        }
        Command::ApiKeys {
            command: ApiKeysCommand::Create { owner, label, scopes },
        } => {
            let app = App::build(Settings::load(config_file)?, Clock::system()).await?;
            let issued = app.api_keys.create_api_key_for(&owner, &label, &scopes).await?;
            eprintln!(
                "created API key {} ({}); the secret below is shown only once:",
                issued.key.id, issued.key.prefix
            );
            println!("{}", issued.secret.expose());
            Ok(())
        }
        Command::Healthcheck { addr } => {
            let addr = match addr {
                Some(addr) => addr,
                None => std::env::var("AUTHD_GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into()),
            };
            healthcheck(&addr).await
        }
    }
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = store::connect(settings.database.url.expose(), 2).await?;
    match command {
        KeysCommand::Rotate => {
            let kid = crate::tokens::keys::rotate(
                &pool,
                &settings.tokens.key_encryption_key,
                settings.tokens.signing_alg,
                Clock::system().now(),
            )
            .await?;
            if let Some(url) = &settings.redis.url {
                let message = crate::revocation::FeedMessage::KeysChanged { origin: "cli".into() };
                crate::revocation::feed::announce(url.expose(), &settings.redis.namespace, message).await?;
            }
            println!(
                "new signing key {kid} ({}); running servers pick it up within {:?}",
                settings.tokens.signing_alg.as_str(),
                settings.intervals.key_refresh
            );
        }
        KeysCommand::List => {
            let mut conn = store::conn(&pool).await?;
            let rows = store::signing_keys::list_all(&mut conn).await?;
            let now = Clock::system().now();
            let window = chrono::Duration::from_std(key_publish_window(&settings))?;
            println!("{:<44} {:<6} {:<26} STATE", "KID", "ALG", "CREATED");
            for row in rows {
                let state = match row.retired_at {
                    None => "active".to_string(),
                    Some(at) if at + window > now => format!(
                        "retired {}, published until {}",
                        at.to_rfc3339(),
                        (at + window).to_rfc3339()
                    ),
                    Some(at) => format!("retired {}", at.to_rfc3339()),
                };
                println!(
                    "{:<44} {:<6} {:<26} {state}",
                    row.kid,
                    row.alg,
                    row.created_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("AUTHD_ADMIN_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        eprint!("password for the new admin (input is echoed): ");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password given: set AUTHD_ADMIN_PASSWORD or write it to standard input");
    }
    Ok(password)
}

async fn healthcheck(addr: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .context("health check failed")?;
    let status = response.into_inner().status();
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(())
    } else {
        bail!("authd at {addr} is {}", status.as_str_name())
    }
}
