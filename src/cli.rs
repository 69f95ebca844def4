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
    /// Export (and purge) the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
    /// Create the next signing key: published at once, signing after AUTHD_KEY_PUBLISH_AHEAD (the
    /// current key then retires, and stays published until its tokens expire).
    Rotate {
        /// Sign with the new key at once (an emergency: verifiers that cache the JWKS may not know
        /// it yet).
        #[arg(long)]
        now: bool,
    },
    /// List signing keys with their state (next, active, retired, revoked).
    List,
    /// Drop a key from the JWKS at once: every token it signed stops verifying.
    Revoke {
        /// The key's id, as `keys list` shows it (a thumbprint in base64url, which may begin
        /// with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
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

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write the events that occurred before a time as JSON lines, oldest first (one object per
    /// event: the fields of ListAuditEvents, `details` as an object); with --purge, then delete
    /// exactly the events written.
    Export {
        /// An RFC 3339 time (2026-09-01T00:00:00Z), or an age with its unit (90d, 12h: the
        /// events older than that); not in the future.
        #[arg(long, allow_hyphen_values = true)]
        before: String,
        /// A new file to write (never over one; mode 0600): it appears whole or not at all
        /// (written under a temporary name beside it, synced, then linked). Standard output
        /// when absent.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Delete the events written, once the file is on disk (needs --out).
        #[arg(long)]
        purge: bool,
    },
}

impl Cli {
    /// How spans leave the process: only `serve` exports them (the standard `OTEL_*` variables).
    pub fn exported_traces(&self) -> Result<Option<config::OtlpProtocol>, config::ConfigError> {
        match self.command {
            Command::Serve { .. } => Ok(config::Telemetry::from_env(&|name| std::env::var(name).ok())?.traces),
            _ => Ok(None),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_file = cli.config.as_deref();
    match cli.command {
        Command::Serve { no_migrate } => {
            let mut settings = Settings::load(config_file)?;
            settings.telemetry = config::Telemetry::from_env(&|name| std::env::var(name).ok())?;
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
        Command::Audit {
            command: AuditCommand::Export { before, out, purge },
        } => {
            let before = parse_before(&before, Clock::system().now())?;
            if purge && out.is_none() {
                bail!("--purge needs --out FILE: what goes to standard output cannot be known to be kept");
            }
            let url = config::database_url(config_file)?;
            let pool = store::connect(url.expose(), 2).await?;
            export_audit(&pool, before, out.as_deref(), purge).await
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

/// `--before`: an RFC 3339 time, or an age with its unit (`90d`, `12h`) counted back from
/// `now`; never later than `now`.
fn parse_before(text: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let text = text.trim();
    let before = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.to_utc(),
        // A bare number would be seconds: `--before 90` meaning days would purge nearly all.
        Err(_) if text.ends_with(|c: char| c.is_ascii_alphabetic()) => config::parse_duration(text)
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age))
            .with_context(|| format!("--before: `{text}` is neither an RFC 3339 time nor an age like 90d or 12h"))?,
        Err(_) => bail!("--before: `{text}` is neither an RFC 3339 time nor an age like 90d or 12h (give the unit)"),
    };
    if before > now {
        bail!("--before: {} is in the future", before.to_rfc3339());
    }
    Ok(before)
}

async fn export_audit(
    pool: &store::Pool,
    before: chrono::DateTime<chrono::Utc>,
    out: Option<&std::path::Path>,
    purge: bool,
) -> anyhow::Result<()> {
    use crate::audit::export;
    use std::io::Write;
    let (written, whither) = match out {
        Some(path) => {
            // Never over another file (an earlier export, whose events may be purged).
            if path.symlink_metadata().is_ok() {
                bail!("--out: {} exists; name a new file", path.display());
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let file = export::Partial::create(dir)?;
            let (written, file) = export::write_before(pool, before, file).await?;
            file.commit(std::iter::once(path.to_path_buf()))
                .await
                .with_context(|| format!("--out: {} appeared meanwhile; nothing was deleted", path.display()))?;
            (written, path.display().to_string())
        }
        None => {
            let (written, mut stdout) =
                export::write_before(pool, before, std::io::BufWriter::new(std::io::stdout())).await?;
            stdout.flush()?;
            (written, "standard output".to_string())
        }
    };
    match written.span() {
        Some((first, last)) => eprintln!(
            "wrote {} events (ids {first} to {last}) from before {} to {whither}",
            written.count(),
            before.to_rfc3339()
        ),
        None => eprintln!(
            "no events from before {}; wrote nothing to {whither}",
            before.to_rfc3339()
        ),
    }
    if purge {
        let deleted = export::purge(pool, &written).await?;
        eprintln!("deleted those {deleted} events");
    }
    Ok(())
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = store::connect(settings.database.url.expose(), 2).await?;
    let now = Clock::system().now();
    let tokens = &settings.tokens;
    match command {
        KeysCommand::Rotate { now: at_once } => {
            let ahead = if at_once {
                std::time::Duration::ZERO
            } else {
                tokens.key_publish_ahead
            };
            let (kid, signs_from) =
                crate::tokens::keys::rotate(&pool, &tokens.key_encryption_key, tokens.signing_alg, now, ahead).await?;
            announce_keys(&settings).await?;
            println!(
                "new signing key {kid} ({}), published now, signing from {}",
                tokens.signing_alg.as_str(),
                signs_from.to_rfc3339()
            );
        }
        KeysCommand::Revoke { kid } => {
            crate::tokens::keys::revoke(&pool, &kid, now).await?;
            announce_keys(&settings).await?;
            println!("signing key {kid} revoked: the tokens it signed no longer verify");
        }
        KeysCommand::List => {
            let mut conn = store::conn(&pool).await?;
            let rows = store::signing_keys::list_all(&mut conn).await?;
            let window = chrono::Duration::from_std(key_publish_window(&settings))?;
            let time = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            println!(
                "{:<44} {:<6} {:<8} {:<21} {:<21} PUBLISHED UNTIL",
                "KID", "ALG", "STATE", "CREATED", "SIGNING FROM"
            );
            for row in rows {
                let state = match (row.revoked_at, row.retired_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(end)) if end <= now => "retired",
                    _ if row.activates_at > now => "next",
                    _ => "active",
                };
                let until = match (row.revoked_at, row.retired_at) {
                    (Some(at), _) => time(at),
                    (None, Some(end)) => time(end + window),
                    (None, None) => "-".to_string(),
                };
                println!(
                    "{:<44} {:<6} {state:<8} {:<21} {:<21} {until}",
                    row.kid,
                    row.alg,
                    time(row.created_at),
                    time(row.activates_at)
                );
            }
        }
    }
    Ok(())
}

/// Tells running servers the key set changed, through Redis; without it they read the keys
/// again within `AUTHD_KEY_REFRESH_INTERVAL`.
async fn announce_keys(settings: &Settings) -> anyhow::Result<()> {
    match &settings.redis.url {
        Some(url) => {
            let message = crate::revocation::FeedMessage::KeysChanged { origin: "cli".into() };
            crate::revocation::feed::announce(url.expose(), &settings.redis.namespace, message).await
        }
        None => {
            eprintln!(
                "no AUTHD_REDIS_URL: running servers pick the change up within {:?}",
                settings.intervals.key_refresh
            );
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_may_begin_with_a_hyphen() {
        // Key ids are base64url thumbprints: one in 64 begins with `-`.
        let cli = Cli::try_parse_from(["authd", "keys", "revoke", "-x1Yz_AbC"]).expect("parsed");
        match cli.command {
            Command::Keys {
                command: KeysCommand::Revoke { kid },
            } => assert_eq!(kid, "-x1Yz_AbC"),
            other => panic!("parsed as {other:?}"),
        }
    }
}
