//! Settings from `AUTHD_*` environment variables, an optional TOML file with the same keys in lower
//! case, and `<NAME>_FILE` variables that name a file holding the value (for secrets).
//!
//! The settings come in sections (database, Redis, server, tokens, accounts, passwords, argon2,
//! mail, limits, intervals, audit, gateway), each a struct deserialised from the merged sources
//! ([`source`]); the keys of the sections are the keys authd reads. A missing or malformed
//! setting is one [`ConfigError`] that names the variable.

mod providers;
mod source;
mod telemetry;

pub use providers::{ProviderSettings, check_provider_url};
pub use telemetry::{OtlpProtocol, Telemetry};

use crate::secret::Secret;
use base64::Engine;
use serde::Deserialize;
use source::Sources;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A setting that is missing or wrong; its `Display` is the one line start-up prints.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            name: source::env_name(key),
            message: message.into(),
        }
    }
}

/// The JWS algorithm of newly created signing keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    EdDsa,
    Es256,
    Rs256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
}

/// Verified access tokens remembered by default (`AUTHD_TOKEN_CACHE_SIZE`).
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = authd_client::cache::DEFAULT_CAPACITY;

/// Where the record is kept.
#[derive(Clone, Debug, Deserialize)]
pub struct Database {
    #[serde(rename = "database_url", deserialize_with = "parse::postgres_url")]
    pub url: Secret<String>,
    #[serde(
        rename = "database_pool_size",
        default = "default::pool_size",
        deserialize_with = "parse::positive"
    )]
    pub pool_size: u32,
}

/// Redis carries revocations between replicas and holds the shared rate limits; unset means
/// single-node mode.
#[derive(Clone, Debug, Deserialize)]
pub struct Redis {
    #[serde(rename = "redis_url", default, deserialize_with = "parse::redis_url")]
    pub url: Option<Secret<String>>,
    /// Prefix of every Redis key and channel, so that several deployments can share one Redis.
    #[serde(
        rename = "redis_namespace",
        default = "default::namespace",
        deserialize_with = "parse::trimmed"
    )]
    pub namespace: String,
}

/// The listeners and how calls are served.
#[derive(Clone, Debug, Deserialize)]
pub struct Server {
    #[serde(default = "default::grpc_addr", deserialize_with = "parse::from_str")]
    pub grpc_addr: SocketAddr,
    #[serde(default = "default::http_addr", deserialize_with = "parse::from_str")]
    pub http_addr: SocketAddr,
    /// Base of the links in mail, and of the JWKS URL in the discovery document.
    #[serde(default = "default::public_url", deserialize_with = "parse::http_url")]
    pub public_url: String,
    /// The name on the pages the mail links open.
    #[serde(default = "default::product_name", deserialize_with = "parse::product_name")]
    pub product_name: String,
    #[serde(default, deserialize_with = "parse::cidrs")]
    pub trusted_proxies: Vec<crate::net::Cidr>,
    #[serde(default = "default::request_timeout", deserialize_with = "parse::duration")]
    pub request_timeout: Duration,
    #[serde(default = "default::shutdown_grace", deserialize_with = "parse::duration")]
    pub shutdown_grace: Duration,
}

/// Access tokens and the keys that sign them.
#[derive(Clone, Debug, Deserialize)]
pub struct Tokens {
    #[serde(default = "default::issuer", deserialize_with = "parse::http_url")]
    pub issuer: String,
    #[serde(default = "default::audience", deserialize_with = "parse::trimmed")]
    pub audience: String,
    /// Encrypts signing keys at rest, seals mail in the outbox, keys digests.
    #[serde(deserialize_with = "parse::key_encryption_key")]
    pub key_encryption_key: Secret<[u8; 32]>,
    #[serde(default = "default::signing_alg", deserialize_with = "parse::signing_alg")]
    pub signing_alg: SigningAlg,
    #[serde(default = "default::access_token_ttl", deserialize_with = "parse::duration")]
    pub access_token_ttl: Duration,
    #[serde(default = "default::refresh_token_ttl", deserialize_with = "parse::duration")]
    pub refresh_token_ttl: Duration,
    /// Verified access tokens remembered (0 = none), so a repeated token skips the signature check.
    #[serde(rename = "token_cache_size", default = "default::token_cache_size")]
    pub cache_size: usize,
    /// How long a new signing key is published before it signs.
    #[serde(
        rename = "key_publish_ahead",
        default = "default::key_publish_ahead",
        deserialize_with = "parse::duration"
    )]
    pub key_publish_ahead: Duration,
    /// Automatic rotation: a new key when the newest began signing this long ago (zero: never).
    #[serde(
        rename = "key_rotation_interval",
        default = "default::key_rotation_interval",
        deserialize_with = "parse::duration"
    )]
    pub key_rotation_interval: Duration,
}

/// The rules of accounts and sessions.
#[derive(Clone, Debug, Deserialize)]
pub struct AccountRules {
    #[serde(default, deserialize_with = "parse::trimmed_option")]
    pub bootstrap_admin_email: Option<String>,
    #[serde(default, deserialize_with = "parse::secret_option")]
    pub bootstrap_admin_password: Option<Secret<String>>,
    #[serde(default)]
    pub require_verified_email: bool,
    #[serde(default = "default::lockout_threshold")]
    pub lockout_threshold: u32,
    #[serde(default = "default::lockout_duration", deserialize_with = "parse::duration")]
    pub lockout_duration: Duration,
    #[serde(
        rename = "account_deletion_grace",
        default = "default::deletion_grace",
        deserialize_with = "parse::duration"
    )]
    pub deletion_grace: Duration,
    #[serde(default = "default::max_sessions_per_user")]
    pub max_sessions_per_user: u32,
    #[serde(default)]
    pub single_session: bool,
    /// `AUTHD_NEW_DEVICE_MAIL`: whether a sign-in from a new device mails the account's owner
    /// (its `login.new_device` event is written either way).
    #[serde(default = "default::yes")]
    pub new_device_mail: bool,
    /// `AUTHD_SESSIONS_URL`: the product's page of the account's sessions, named in that mail.
    #[serde(default, deserialize_with = "parse::optional_http_url")]
    pub sessions_url: Option<String>,
    /// The only scopes users without the admin role may put on their API keys (default none:
    /// their keys authenticate as themselves and carry no scope).
    #[serde(default, deserialize_with = "parse::scopes")]
    pub user_grantable_scopes: Vec<String>,
}

/// What makes a password acceptable, and how many may be hashed at once.
#[derive(Clone, Debug, Deserialize)]
pub struct PasswordRules {
    #[serde(
        rename = "password_min_score",
        default = "default::min_score",
        deserialize_with = "parse::score"
    )]
    pub min_score: u8,
    #[serde(rename = "password_require_uppercase", default)]
    pub require_uppercase: bool,
    #[serde(rename = "password_require_digit", default)]
    pub require_digit: bool,
    #[serde(rename = "password_require_symbol", default)]
    pub require_symbol: bool,
    /// Calls allowed to hash passwords at once; 0 means one per CPU core.
    #[serde(rename = "password_hash_concurrency", default)]
    pub hash_concurrency: usize,
}

impl PasswordRules {
    pub fn policy(&self) -> crate::domain::PasswordPolicy {
        crate::domain::PasswordPolicy {
            min_score: self.min_score,
            require_uppercase: self.require_uppercase,
            require_digit: self.require_digit,
            require_symbol: self.require_symbol,
        }
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Argon2Params {
    #[serde(
        rename = "argon2_memory_kib",
        default = "default::memory_kib",
        deserialize_with = "parse::at_least_8"
    )]
    pub memory_kib: u32,
    #[serde(
        rename = "argon2_iterations",
        default = "default::iterations",
        deserialize_with = "parse::at_least_1"
    )]
    pub iterations: u32,
    #[serde(
        rename = "argon2_parallelism",
        default = "default::parallelism",
        deserialize_with = "parse::at_least_1"
    )]
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// One of OWASP's equivalent argon2id settings (m=12288 KiB, t=3, p=1, as strong as
    /// m=19456, t=2): of those, the one that let most logins through on two cores, where two
    /// 19 MiB areas at once contend for the caches (docs/PERFORMANCE.md).
    fn default() -> Self {
        Self {
            memory_kib: 12_288,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Where mail goes, from whom, and how much of it.
#[derive(Clone, Debug, Deserialize)]
pub struct Mail {
    #[serde(rename = "smtp_url", default, deserialize_with = "parse::smtp_url")]
    pub smtp_url: Option<Secret<String>>,
    #[serde(rename = "mail_dir", default = "default::mail_dir")]
    pub dir: PathBuf,
    #[serde(
        rename = "mail_from",
        default = "default::mail_from",
        deserialize_with = "parse::trimmed"
    )]
    pub from: String,
    /// Mails of one kind to one address per hour; beyond it requests answer OK and send nothing.
    #[serde(rename = "mail_rate_per_hour", default = "default::mail_rate_per_hour")]
    pub rate_per_hour: u32,
}

/// Whether the per-address, per-account and per-RPC limits apply.
#[derive(Clone, Debug, Deserialize)]
pub struct RateLimits {
    #[serde(rename = "rate_limits", default = "default::yes")]
    pub enabled: bool,
}

/// How often the background work runs.
#[derive(Clone, Debug, Deserialize)]
pub struct Intervals {
    /// API-key `last_used_at` stamps gathered in memory are written out.
    #[serde(
        rename = "usage_flush_interval",
        default = "default::thirty_s",
        deserialize_with = "parse::duration"
    )]
    pub usage_flush: Duration,
    /// Each replica re-reads the signing keys (to pick up `authd keys rotate`).
    #[serde(
        rename = "key_refresh_interval",
        default = "default::thirty_s",
        deserialize_with = "parse::duration"
    )]
    pub key_refresh: Duration,
    /// Each replica checks that the database answers (health follows it).
    #[serde(
        rename = "health_probe_interval",
        default = "default::two_s",
        deserialize_with = "parse::duration"
    )]
    pub health_probe: Duration,
    /// Every replica reads the revocations recorded since its last read from Postgres, in case
    /// a feed message was lost.
    #[serde(
        rename = "revocation_resync_interval",
        default = "default::quarter_s",
        deserialize_with = "parse::duration"
    )]
    pub revocation_resync: Duration,
    /// The watch streams send a heartbeat.
    #[serde(
        rename = "watch_heartbeat_interval",
        default = "default::fifteen_s",
        deserialize_with = "parse::duration"
    )]
    pub watch_heartbeat: Duration,
    /// The delivery worker looks for due mail (new mail written here wakes it at once).
    #[serde(
        rename = "mail_poll_interval",
        default = "default::five_s",
        deserialize_with = "parse::duration"
    )]
    pub mail_poll: Duration,
    /// Housekeeping purges expired tokens, sessions, delivered mail, and accounts whose deletion
    /// grace has passed.
    #[serde(
        rename = "housekeeping_interval",
        default = "default::thirty_s",
        deserialize_with = "parse::duration"
    )]
    pub housekeeping: Duration,
}

/// How authd answers gateways (Envoy's `Check`, `/forward-auth`).
#[derive(Clone, Debug, Deserialize)]
pub struct Gateway {
    /// Whether the upstream loses the `authorization` header of an allowed request.
    #[serde(rename = "gateway_remove_authorization", default)]
    pub remove_authorization: bool,
}

/// How long the audit trail is kept, and where it goes before it is purged.
#[derive(Clone, Debug, Deserialize)]
pub struct Audit {
    #[serde(
        rename = "audit_retention",
        default = "default::audit_retention",
        deserialize_with = "parse::duration"
    )]
    pub retention: Duration,
    /// One gzip JSON-lines file per UTC day is written here before that day is purged.
    #[serde(rename = "audit_archive_dir", default, deserialize_with = "parse::optional_path")]
    pub archive_dir: Option<PathBuf>,
}

/// Everything authd can be told, by section. Secrets are wrapped so that `Debug` never shows them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database: Database,
    pub redis: Redis,
    pub server: Server,
    pub tokens: Tokens,
    pub accounts: AccountRules,
    pub passwords: PasswordRules,
    pub argon2: Argon2Params,
    pub mail: Mail,
    pub limits: RateLimits,
    pub intervals: Intervals,
    pub audit: Audit,
    pub gateway: Gateway,
    /// Federated sign-in providers, in the order listed.
    pub providers: Vec<ProviderSettings>,
    /// What goes to an OpenTelemetry collector: nothing, unless `authd serve` read the standard
    /// `OTEL_*` variables ([`Telemetry::from_env`]).
    pub telemetry: Telemetry,
}

/// Every key authd reads: those of the sections (and the list of providers, each of which
/// reads its own keys).
fn keys() -> Vec<&'static str> {
    use source::keys_of;
    [
        keys_of::<Database>(),
        keys_of::<Redis>(),
        keys_of::<Server>(),
        keys_of::<Tokens>(),
        keys_of::<AccountRules>(),
        keys_of::<PasswordRules>(),
        keys_of::<Argon2Params>(),
        keys_of::<Mail>(),
        keys_of::<RateLimits>(),
        keys_of::<Intervals>(),
        keys_of::<Audit>(),
        keys_of::<Gateway>(),
        &[providers::PROVIDERS_KEY],
    ]
    .concat()
}

fn gather(env: &dyn Fn(&str) -> Option<String>, file: Option<&Path>) -> Result<Sources, ConfigError> {
    let text = file.map(Sources::read_file).transpose()?;
    let origin = file.map(|p| p.display().to_string()).unwrap_or_default();
    Sources::gather(&keys(), env, text.as_deref().map(|text| (text, origin.as_str())))
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses `90s`, `15m`, `12h`, `30d`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Only `AUTHD_DATABASE_URL`, for commands that need nothing else (`authd migrate`).
pub fn database_url(config_file: Option<&Path>) -> Result<Secret<String>, ConfigError> {
    Ok(gather(&process_env, config_file)?.section::<Database>()?.url)
}

/// The argon2id parameters alone (for the micro-benchmarks, which time one hash the way the server
/// would compute it).
pub fn argon2_params(config_file: Option<&Path>) -> Result<Argon2Params, ConfigError> {
    gather(&process_env, config_file)?.section()
}

impl Settings {
    /// Reads the process environment and, when given, the TOML file.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::from_sources(&process_env, config_file)?;
        // Only the real environment can be listed: a misspelt provider variable is an error.
        // Empty variables are unset, as everywhere in the settings.
        let names: Vec<String> = std::env::vars_os()
            .filter(|(_, value)| !value.to_string_lossy().trim().is_empty())
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        providers::check_environment(&settings.providers, names.iter().map(String::as_str))?;
        Ok(settings)
    }

    pub fn from_sources(env: &dyn Fn(&str) -> Option<String>, config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_merged(&gather(env, config_file)?)
    }

    /// Settings from the environment `env` and the text of a TOML configuration (for tests and
    /// the fuzzer; `from_sources` reads the file).
    pub fn from_toml(env: &dyn Fn(&str) -> Option<String>, toml: &str) -> Result<Self, ConfigError> {
        Self::from_merged(&Sources::gather(&keys(), env, Some((toml, "config")))?)
    }

    fn from_merged(sources: &Sources) -> Result<Self, ConfigError> {
        let settings = Self {
            database: sources.section()?,
            redis: sources.section()?,
            tokens: sources.section()?,
            server: sources.section()?,
            accounts: sources.section()?,
            passwords: sources.section()?,
            argon2: sources.section()?,
            mail: sources.section()?,
            limits: sources.section()?,
            intervals: sources.section()?,
            audit: sources.section()?,
            gateway: sources.section()?,
            providers: providers::providers(sources)?,
            telemetry: Telemetry::default(),
        };
        settings.check()?;
        Ok(settings)
    }

    /// The rules that tie settings together.
    fn check(&self) -> Result<(), ConfigError> {
        let tokens = &self.tokens;
        if tokens.access_token_ttl < Duration::from_secs(10) {
            return Err(ConfigError::new("access_token_ttl", "must be at least 10s"));
        }
        // Access tokens cannot be recalled from the services that cached them; revocation
        // entries are kept as long as one could still be presented.
        if tokens.access_token_ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::new("access_token_ttl", "must be at most 24h"));
        }
        if tokens.refresh_token_ttl < tokens.access_token_ttl {
            return Err(ConfigError::new(
                "refresh_token_ttl",
                "must not be shorter than AUTHD_ACCESS_TOKEN_TTL",
            ));
        }
        let accounts = &self.accounts;
        if accounts.bootstrap_admin_email.is_some() && accounts.bootstrap_admin_password.is_none() {
            return Err(ConfigError::new(
                "bootstrap_admin_password",
                "is required when AUTHD_BOOTSTRAP_ADMIN_EMAIL is set",
            ));
        }
        Ok(())
    }
}

/// The defaults of the contract.
mod default {
    use super::*;

    pub fn pool_size() -> u32 {
        16
    }
    pub fn namespace() -> String {
        "authd".into()
    }
    pub fn grpc_addr() -> SocketAddr {
        ([127, 0, 0, 1], 50051).into()
    }
    pub fn http_addr() -> SocketAddr {
        ([127, 0, 0, 1], 8080).into()
    }
    pub fn public_url() -> String {
        "http://127.0.0.1:8080".into()
    }
    pub fn product_name() -> String {
        "authd".into()
    }
    pub fn issuer() -> String {
        "http://127.0.0.1:50051".into()
    }
    pub fn audience() -> String {
        "authd".into()
    }
    pub fn signing_alg() -> SigningAlg {
        SigningAlg::EdDsa
    }
    pub fn access_token_ttl() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn refresh_token_ttl() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn token_cache_size() -> usize {
        DEFAULT_TOKEN_CACHE_SIZE
    }
    pub fn key_publish_ahead() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn key_rotation_interval() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(20)
    }
    pub fn lockout_threshold() -> u32 {
        5
    }
    pub fn lockout_duration() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn deletion_grace() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn max_sessions_per_user() -> u32 {
        5
    }
    pub fn min_score() -> u8 {
        2
    }
    pub fn memory_kib() -> u32 {
        Argon2Params::default().memory_kib
    }
    pub fn iterations() -> u32 {
        Argon2Params::default().iterations
    }
    pub fn parallelism() -> u32 {
        Argon2Params::default().parallelism
    }
    pub fn mail_dir() -> PathBuf {
        "./.data/mail".into()
    }
    pub fn mail_from() -> String {
        "authd@localhost".into()
    }
    pub fn mail_rate_per_hour() -> u32 {
        3
    }
    pub fn yes() -> bool {
        true
    }
    pub fn quarter_s() -> Duration {
        Duration::from_millis(250)
    }
    pub fn two_s() -> Duration {
        Duration::from_secs(2)
    }
    pub fn five_s() -> Duration {
        Duration::from_secs(5)
    }
    pub fn fifteen_s() -> Duration {
        Duration::from_secs(15)
    }
    pub fn thirty_s() -> Duration {
        Duration::from_secs(30)
    }
    pub fn audit_retention() -> Duration {
        Duration::from_secs(90 * 86_400)
    }
}

/// Values that parse themselves from the text of a setting; a failure names no key, and the
/// section's reader adds it.
mod parse {
    use super::*;
    use serde::Deserializer;
    use serde::de::Error;

    fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        String::deserialize(d).map(|s| s.trim().to_string())
    }

    pub fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d)
    }

    /// A name to show on a page: 1 to 64 characters, none of them a control character.
    pub fn product_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let name = text(d)?;
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(D::Error::custom(
                "must be 1 to 64 characters, none of them a control character",
            ));
        }
        Ok(name)
    }

    pub fn trimmed_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        text(d).map(Some)
    }

    pub fn secret_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
        String::deserialize(d).map(|s| Some(Secret::new(s)))
    }

    pub fn from_str<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<T, D::Error> {
        let text = text(d)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("cannot parse `{text}`")))
    }

    pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least(d, 1)
    }

    pub fn at_least_1<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least(d, 1)
    }

    pub fn at_least_8<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least(d, 8)
    }

    fn at_least<'de, D: Deserializer<'de>>(d: D, min: u32) -> Result<u32, D::Error> {
        let text = text(d)?;
        text.parse()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| D::Error::custom(format!("cannot parse `{text}`")))
    }

    pub fn score<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let text = text(d)?;
        text.parse()
            .ok()
            .filter(|s| *s <= 4)
            .ok_or_else(|| D::Error::custom(format!("cannot parse `{text}`")))
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = text(d)?;
        parse_duration(&text)
            .ok_or_else(|| D::Error::custom(format!("`{text}` is not a duration like 30s, 15m, 12h or 30d")))
    }

    /// A path; empty means none.
    pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let text = text(d)?;
        Ok(Some(text.trim()).filter(|t| !t.is_empty()).map(PathBuf::from))
    }

    fn is_http(value: &str) -> bool {
        value.starts_with("http://") || value.starts_with("https://")
    }

    pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = text(d)?.trim_end_matches('/').to_string();
        if is_http(&value) {
            Ok(value)
        } else {
            Err(D::Error::custom("must be an http:// or https:// URL"))
        }
    }

    /// An http(s) URL, or nothing when empty.
    pub fn optional_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let value = text(d)?;
        if value.is_empty() {
            return Ok(None);
        }
        if is_http(&value) && !value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Ok(Some(value))
        } else {
            Err(D::Error::custom("must be an http:// or https:// URL"))
        }
    }

    /// A URL that may hold a password: it is never echoed in an error.
    fn secret_url<'de, D: Deserializer<'de>>(
        d: D,
        schemes: &[&str],
        message: &'static str,
    ) -> Result<Secret<String>, D::Error> {
        let url = text(d)?;
        if schemes.iter().any(|scheme| url.starts_with(scheme)) {
            Ok(Secret::new(url))
        } else {
            Err(D::Error::custom(message))
        }
    }

    pub fn postgres_url<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<String>, D::Error> {
        secret_url(d, &["postgres://", "postgresql://"], "must be a postgres:// URL")
    }

    pub fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
        secret_url(
            d,
            &["redis://", "rediss://", "redis+sentinel://"],
            "must be a redis://, rediss:// or redis+sentinel:// URL",
        )
        .map(Some)
    }

    pub fn smtp_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
        secret_url(d, &["smtp://", "smtps://"], "must be an smtp:// or smtps:// URL").map(Some)
    }

    pub fn key_encryption_key<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<[u8; 32]>, D::Error> {
        let text = text(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Secret::new)
            .ok_or_else(|| D::Error::custom("must be 32 bytes, base64-encoded"))
    }

    pub fn signing_alg<'de, D: Deserializer<'de>>(d: D) -> Result<SigningAlg, D::Error> {
        let text = text(d)?;
        SigningAlg::parse(&text).ok_or_else(|| D::Error::custom(format!("cannot parse `{text}`")))
    }

    pub fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::net::Cidr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                crate::net::Cidr::parse(s)
                    .ok_or_else(|| D::Error::custom(format!("`{s}` is not an address or a CIDR block")))
            })
            .collect()
    }

    pub fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                crate::domain::Scope::parse(s)
                    .map(|scope| scope.as_str().to_string())
                    .map_err(|_| D::Error::custom(format!("`{s}` is not a scope")))
            })
            .collect()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const KEK: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn defaults_follow_the_contract() {
        let env = env_of(&[
            ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
            ("AUTHD_KEY_ENCRYPTION_KEY", KEK),
        ]);
        let s = Settings::from_sources(&env, None).unwrap();
        assert_eq!(s.server.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.tokens.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.tokens.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(s.tokens.signing_alg, SigningAlg::EdDsa);
        assert_eq!(s.tokens.audience, "authd");
        assert_eq!(s.accounts.max_sessions_per_user, 5);
    }

    #[test]
    fn providers_are_read_from_the_environment_and_the_file() {
        let env = env_of(&[
            ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
            ("AUTHD_KEY_ENCRYPTION_KEY", KEK),
            ("AUTHD_OIDC_PROVIDERS", "google, Corp"),
            ("AUTHD_OIDC_GOOGLE_CLIENT_IDS", "web.apps, ios.apps"),
            ("AUTHD_OIDC_CORP_ISSUER", "http://127.0.0.1:9000/"),
            ("AUTHD_OIDC_CORP_TRUST_EMAIL", "false"),
        ]);
        let toml = "[oidc.corp]\nclient_ids = [\"authd\"]\ndisplay_name = \"Corp SSO\"\n";
        let s = Settings::from_toml(&env, toml).unwrap();
        let google = &s.providers[0];
        assert_eq!(
            (
                google.name.as_str(),
                google.issuer.as_str(),
                google.display_name.as_str()
            ),
            ("google", "https://accounts.google.com", "Google")
        );
        assert_eq!(google.client_ids, vec!["web.apps", "ios.apps"]);
        assert!(google.trust_email);
        let corp = &s.providers[1];
        assert_eq!(
            corp.issuer, "http://127.0.0.1:9000/",
            "the environment wins; kept as configured"
        );
        assert_eq!((corp.display_name.as_str(), corp.trust_email), ("Corp SSO", false));
        assert_eq!(corp.client_ids, vec!["authd"]);

        let with = |pairs: &'static [(&'static str, &'static str)]| {
            let base = env_of(&[
                ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
                ("AUTHD_KEY_ENCRYPTION_KEY", KEK),
            ]);
            let extra = env_of(pairs);
            Settings::from_sources(&move |name: &str| extra(name).or_else(|| base(name)), None)
        };
        let err = with(&[("AUTHD_OIDC_PROVIDERS", "google")]).unwrap_err();
        assert_eq!(err.name, "AUTHD_OIDC_GOOGLE_CLIENT_IDS");
        let err = with(&[("AUTHD_OIDC_PROVIDERS", "corp"), ("AUTHD_OIDC_CORP_CLIENT_IDS", "x")]).unwrap_err();
        assert_eq!(err.name, "AUTHD_OIDC_CORP_ISSUER");
        let err = with(&[
            ("AUTHD_OIDC_PROVIDERS", "corp"),
            ("AUTHD_OIDC_CORP_CLIENT_IDS", "x"),
            ("AUTHD_OIDC_CORP_ISSUER", "http://sso.example.com"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "AUTHD_OIDC_CORP_ISSUER");
        assert!(err.to_string().contains("https"), "{err}");
        let err = Settings::from_toml(&env, "[oidc.other]\nclient_ids = [\"x\"]\n").unwrap_err();
        assert!(err.to_string().contains("does not list"), "{err}");
        let err = Settings::from_toml(&env, "[oidc.corp]\nsecret = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("oidc.corp.secret"), "{err}");
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let env = env_of(&[("AUTHD_KEY_ENCRYPTION_KEY", KEK)]);
        let err = Settings::from_sources(&env, None).unwrap_err();
        assert_eq!(err.name, "AUTHD_DATABASE_URL");
        assert!(err.to_string().starts_with("configuration error: AUTHD_DATABASE_URL"));
    }

    #[test]
    fn a_short_key_encryption_key_is_refused_without_echoing_it() {
        let env = env_of(&[
            ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
            ("AUTHD_KEY_ENCRYPTION_KEY", "c2VjcmV0"),
        ]);
        let err = Settings::from_sources(&env, None).unwrap_err();
        assert_eq!(err.name, "AUTHD_KEY_ENCRYPTION_KEY");
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn secrets_come_from_files_and_toml() {
        let dir = std::env::temp_dir().join(format!("authd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kek_path = dir.join("kek");
        std::fs::write(&kek_path, format!("{KEK}\n")).unwrap();
        let toml_path = dir.join("authd.toml");
        std::fs::write(
            &toml_path,
            format!(
                "database_url = \"postgres://a@b/c\"\nkey_encryption_key_file = \"{}\"\nsigning_alg = \"ES256\"\n",
                kek_path.display()
            ),
        )
        .unwrap();
        let env = env_of(&[("AUTHD_SIGNING_ALG", "RS256")]);
        let s = Settings::from_sources(&env, Some(&toml_path)).unwrap();
        assert_eq!(
            s.tokens.signing_alg,
            SigningAlg::Rs256,
            "the environment overrides the file"
        );
        assert_eq!(s.tokens.key_encryption_key.expose(), &[0u8; 32]);
        assert!(!format!("{s:?}").contains("postgres://a@b/c"));
        std::fs::write(&toml_path, "databse_url = \"x\"\n").unwrap();
        let err = Settings::from_sources(&env, Some(&toml_path)).unwrap_err();
        assert!(err.to_string().contains("databse_url"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The keys of the contract (`AUTHD_` + upper case), as the sections read them.
    #[test]
    fn the_sections_read_every_key_of_the_contract() {
        let mut keys = keys();
        keys.sort_unstable();
        let mut contract = vec![
            "database_url",
            "database_pool_size",
            "redis_url",
            "grpc_addr",
            "http_addr",
            "issuer",
            "audience",
            "key_encryption_key",
            "signing_alg",
            "access_token_ttl",
            "refresh_token_ttl",
            "bootstrap_admin_email",
            "bootstrap_admin_password",
            "public_url",
            "product_name",
            "smtp_url",
            "mail_dir",
            "mail_from",
            "require_verified_email",
            "rate_limits",
            "lockout_threshold",
            "lockout_duration",
            "trusted_proxies",
            "account_deletion_grace",
            "max_sessions_per_user",
            "single_session",
            "new_device_mail",
            "sessions_url",
            "shutdown_grace",
            "audit_retention",
            "audit_archive_dir",
            "request_timeout",
            "argon2_memory_kib",
            "argon2_iterations",
            "argon2_parallelism",
            "password_min_score",
            "password_require_uppercase",
            "password_require_digit",
            "password_require_symbol",
            "user_grantable_scopes",
            "password_hash_concurrency",
            "token_cache_size",
            "usage_flush_interval",
            "key_refresh_interval",
            "health_probe_interval",
            "redis_namespace",
            "revocation_resync_interval",
            "watch_heartbeat_interval",
            "mail_rate_per_hour",
            "mail_poll_interval",
            "housekeeping_interval",
            "gateway_remove_authorization",
            "key_publish_ahead",
            "key_rotation_interval",
            "oidc_providers",
        ];
        contract.sort_unstable();
        assert_eq!(keys, contract);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let base = [
            ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
            ("AUTHD_KEY_ENCRYPTION_KEY", KEK),
        ];
        for (name, value, message) in [
            ("AUTHD_LOCKOUT_DURATION", "soon", "is not a duration"),
            ("AUTHD_SINGLE_SESSION", "maybe", "is not true or false"),
            ("AUTHD_LOCKOUT_THRESHOLD", "-1", "cannot parse `-1`"),
            ("AUTHD_DATABASE_POOL_SIZE", "0", "cannot parse `0`"),
            (
                "AUTHD_TRUSTED_PROXIES",
                "10.0.0.0/8, nowhere",
                "`nowhere` is not an address",
            ),
            ("AUTHD_PUBLIC_URL", "ftp://x", "must be an http:// or https:// URL"),
            ("AUTHD_PRODUCT_NAME", "Acme\tID", "must be 1 to 64 characters"),
            (
                "AUTHD_SESSIONS_URL",
                "app.example.com/sessions",
                "must be an http:// or https:// URL",
            ),
            ("AUTHD_NEW_DEVICE_MAIL", "no", "is not true or false"),
        ] {
            let pairs: Vec<(&str, &str)> = base.iter().copied().chain([(name, value)]).collect();
            let env = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
            let err = Settings::from_sources(&env, None).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.message.contains(message), "{name}: {}", err.message);
        }
    }

    #[test]
    fn sections_hold_their_values() {
        let env = env_of(&[
            ("AUTHD_DATABASE_URL", "postgres://x@h/db"),
            ("AUTHD_KEY_ENCRYPTION_KEY", KEK),
            ("AUTHD_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("AUTHD_USER_GRANTABLE_SCOPES", "tasks:read,tasks:write"),
            ("AUTHD_RATE_LIMITS", "0"),
            ("AUTHD_ARGON2_MEMORY_KIB", "1024"),
            ("AUTHD_PASSWORD_MIN_SCORE", "3"),
            ("AUTHD_BOOTSTRAP_ADMIN_EMAIL", " admin@example.com "),
            ("AUTHD_BOOTSTRAP_ADMIN_PASSWORD", " spaces kept "),
        ]);
        let s = Settings::from_sources(&env, None).unwrap();
        assert_eq!(s.server.trusted_proxies.len(), 2);
        assert_eq!(s.accounts.user_grantable_scopes, ["tasks:read", "tasks:write"]);
        assert!(!s.limits.enabled);
        assert_eq!(s.argon2.memory_kib, 1024);
        assert_eq!(s.argon2.iterations, 3, "the default");
        assert_eq!(s.passwords.policy().min_score, 3);
        assert_eq!(s.accounts.bootstrap_admin_email.as_deref(), Some("admin@example.com"));
        assert_eq!(
            s.accounts
                .bootstrap_admin_password
                .as_ref()
                .map(|p| p.expose().as_str()),
            Some(" spaces kept ")
        );
        assert_eq!(s.database.pool_size, 16);
        assert_eq!(s.intervals.watch_heartbeat, Duration::from_secs(15));
    }
}
