//! Settings from `AUTHD_*` environment variables, an optional TOML file with the same keys in lower
//! case, and `<NAME>_FILE` variables that name a file holding the value (for secrets).
//!
//! A missing or malformed setting is one [`ConfigError`] that names the variable.

use crate::secret::Secret;
use base64::Engine;
use std::collections::BTreeMap;
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
            name: env_name(key),
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

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommendation for argon2id.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Everything authd can be told. Secrets are wrapped so that `Debug` never shows them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: Secret<String>,
    pub database_pool_size: u32,
    pub redis_url: Option<Secret<String>>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub issuer: String,
    pub audience: String,
    pub key_encryption_key: Secret<[u8; 32]>,
    pub signing_alg: SigningAlg,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<Secret<String>>,
    pub public_url: String,
    pub smtp_url: Option<Secret<String>>,
    pub mail_dir: PathBuf,
    pub mail_from: String,
    pub require_verified_email: bool,
    pub rate_limits: bool,
    pub lockout_threshold: u32,
    pub lockout_duration: Duration,
    pub trusted_proxies: Vec<crate::net::Cidr>,
    pub account_deletion_grace: Duration,
    pub max_sessions_per_user: u32,
    pub single_session: bool,
    pub shutdown_grace: Duration,
    pub audit_retention: Duration,
    pub request_timeout: Duration,
    pub argon2: Argon2Params,
    pub password_policy: crate::domain::PasswordPolicy,
    /// The only scopes users without the admin role may put on their API keys (default none:
    /// their keys authenticate as themselves and carry no scope).
    pub user_grantable_scopes: Vec<String>,
    /// Calls allowed to hash passwords at once; 0 means one per CPU core.
    pub password_hash_concurrency: usize,
    /// Verified access tokens remembered (0 = none), so a repeated token skips the signature check.
    pub token_cache_size: usize,
    /// How often API-key `last_used_at` stamps gathered in memory are written out.
    pub usage_flush_interval: Duration,
    /// How often each replica re-reads the signing keys (to pick up `authd keys rotate`).
    pub key_refresh_interval: Duration,
    /// How often each replica checks that the database answers (health follows it).
    pub health_probe_interval: Duration,
    /// Prefix of every Redis key and channel, so that several deployments can share one Redis.
    pub redis_namespace: String,
    /// How often every replica re-reads recent revocations from Postgres, in case a feed message
    /// was lost.
    pub revocation_resync_interval: Duration,
    /// How often the watch streams send a heartbeat.
    pub watch_heartbeat_interval: Duration,
    /// Mails of one kind to one address per hour; beyond it requests answer OK and send nothing.
    pub mail_rate_per_hour: u32,
    /// How often the delivery worker looks for due mail (new mail written here wakes it at once).
    pub mail_poll_interval: Duration,
    /// How often housekeeping runs: purges of expired tokens, sessions, delivered mail, and of
    /// accounts whose deletion grace has passed.
    pub housekeeping_interval: Duration,
    pub otel_endpoint: Option<String>,
}

/// Every key authd reads, lower case as in the TOML file; the environment name is `AUTHD_` + upper.
const KEYS: &[&str] = &[
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
    "shutdown_grace",
    "audit_retention",
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
];

fn env_name(key: &str) -> String {
    if key == "otel_exporter_otlp_endpoint" {
        return "OTEL_EXPORTER_OTLP_ENDPOINT".into();
    }
    format!("AUTHD_{}", key.to_ascii_uppercase())
}

/// The raw string values gathered from the sources, before parsing.
struct Raw(BTreeMap<String, String>);

impl Raw {
    fn argon2(&self) -> Result<Argon2Params, ConfigError> {
        let default = Argon2Params::default();
        Ok(Argon2Params {
            memory_kib: self.parse("argon2_memory_kib", default.memory_kib, |v| {
                v.parse().ok().filter(|m| *m >= 8)
            })?,
            iterations: self.parse("argon2_iterations", default.iterations, |v| {
                v.parse().ok().filter(|t| *t >= 1)
            })?,
            parallelism: self.parse("argon2_parallelism", default.parallelism, |v| {
                v.parse().ok().filter(|p| *p >= 1)
            })?,
        })
    }
}

impl Raw {
    fn gather(env: &dyn Fn(&str) -> Option<String>, file: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| ConfigError {
                name: "--config".into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?),
            None => None,
        };
        let origin = file.map(|p| p.display().to_string()).unwrap_or_default();
        Self::gather_text(env, text.as_deref().map(|text| (text, origin.as_str())))
    }

    /// [`Raw::gather`] with the TOML text already read (`origin` names it in errors).
    fn gather_text(env: &dyn Fn(&str) -> Option<String>, toml: Option<(&str, &str)>) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some((text, origin)) = toml {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
                name: "--config".into(),
                message: format!("{origin}: {}", e.message()),
            })?;
            for (key, value) in table {
                let (base, from_file) = match key.strip_suffix("_file") {
                    Some(base) => (base.to_string(), true),
                    None => (key.clone(), false),
                };
                if !KEYS.contains(&base.as_str()) {
                    return Err(ConfigError {
                        name: "--config".into(),
                        message: format!("unknown key `{key}` in {origin}"),
                    });
                }
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                let text = if from_file {
                    read_secret_file(&base, &text)?
                } else {
                    text
                };
                values.insert(base, text);
            }
        }
        for key in KEYS.iter().copied().chain(["otel_exporter_otlp_endpoint"]) {
            let name = env_name(key);
            if let Some(value) = env(&name) {
                values.insert(key.to_string(), value);
            } else if let Some(path) = env(&format!("{name}_FILE")) {
                values.insert(key.to_string(), read_secret_file(key, &path)?);
            }
        }
        Ok(Self(values))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(key, "is required but not set"))
    }

    fn parse<T>(&self, key: &str, default: T, parse: impl Fn(&str) -> Option<T>) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => {
                parse(text.trim()).ok_or_else(|| ConfigError::new(key, format!("cannot parse `{}`", text.trim())))
            }
        }
    }

    fn duration(&self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let text = self.get(key).unwrap_or(default).trim();
        parse_duration(text)
            .ok_or_else(|| ConfigError::new(key, format!("`{text}` is not a duration like 30s, 15m, 12h or 30d")))
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(ConfigError::new(key, format!("`{v}` is not true or false"))),
        }
    }
}

/// The most a secret file may hold: a key, a password or a URL is far smaller, and a path that
/// names something endless (`/dev/zero`) must not exhaust memory.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(key: &str, path: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let error = |message: String| ConfigError {
        name: format!("{}_FILE", env_name(key)),
        message,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE + 1).read_to_string(&mut text))
        .map_err(|e| error(format!("cannot read {path}: {e}")))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(error(format!("{path} is larger than {MAX_SECRET_FILE} bytes")));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
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
    let raw = Raw::gather(&|name| std::env::var(name).ok(), config_file)?;
    Ok(Secret::new(raw.required("database_url")?.to_string()))
}

/// The argon2id parameters alone (for the micro-benchmarks, which time one hash the way the server
/// would compute it).
pub fn argon2_params(config_file: Option<&Path>) -> Result<Argon2Params, ConfigError> {
    Raw::gather(&|name| std::env::var(name).ok(), config_file)?.argon2()
}

impl Settings {
    /// Reads the process environment and, when given, the TOML file.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(&|name| std::env::var(name).ok(), config_file)
    }

    pub fn from_sources(env: &dyn Fn(&str) -> Option<String>, config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_raw(Raw::gather(env, config_file)?)
    }

    /// Settings from the environment `env` and the text of a TOML configuration (for tests and
    /// the fuzzer; `from_sources` reads the file).
    pub fn from_toml(env: &dyn Fn(&str) -> Option<String>, toml: &str) -> Result<Self, ConfigError> {
        Self::from_raw(Raw::gather_text(env, Some((toml, "config")))?)
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let database_url = raw.required("database_url")?.to_string();
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::new("database_url", "must be a postgres:// URL"));
        }
        let redis_url = raw.get("redis_url").map(|u| u.to_string());
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new("redis_url", "must be a redis:// or rediss:// URL"));
        }
        let kek_text = raw.required("key_encryption_key")?;
        let kek = base64::engine::general_purpose::STANDARD
            .decode(kek_text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| ConfigError::new("key_encryption_key", "must be 32 bytes, base64-encoded"))?;
        let signing_alg = raw.parse("signing_alg", SigningAlg::EdDsa, SigningAlg::parse)?;
        let access_token_ttl = raw.duration("access_token_ttl", "15m")?;
        let refresh_token_ttl = raw.duration("refresh_token_ttl", "30d")?;
        if access_token_ttl < Duration::from_secs(10) {
            return Err(ConfigError::new("access_token_ttl", "must be at least 10s"));
        }
        // Access tokens cannot be recalled from the services that cached them; revocation
        // entries are kept as long as one could still be presented.
        if access_token_ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::new("access_token_ttl", "must be at most 24h"));
        }
        if refresh_token_ttl < access_token_ttl {
            return Err(ConfigError::new(
                "refresh_token_ttl",
                "must not be shorter than AUTHD_ACCESS_TOKEN_TTL",
            ));
        }
        let bootstrap_admin_email = raw.get("bootstrap_admin_email").map(|v| v.trim().to_string());
        let bootstrap_admin_password = raw.get("bootstrap_admin_password").map(|v| Secret::new(v.to_string()));
        if bootstrap_admin_email.is_some() && bootstrap_admin_password.is_none() {
            return Err(ConfigError::new(
                "bootstrap_admin_password",
                "is required when AUTHD_BOOTSTRAP_ADMIN_EMAIL is set",
            ));
        }
        let url = |key: &str, default: &str| -> Result<String, ConfigError> {
            let value = raw.get(key).unwrap_or(default).trim().trim_end_matches('/').to_string();
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(value)
            } else {
                Err(ConfigError::new(key, "must be an http:// or https:// URL"))
            }
        };
        let argon2 = raw.argon2()?;
        Ok(Self {
            database_url: Secret::new(database_url),
            database_pool_size: raw.parse("database_pool_size", 16, |v| v.parse().ok().filter(|n| *n > 0))?,
            redis_url: redis_url.map(Secret::new),
            grpc_addr: raw.parse("grpc_addr", ([127, 0, 0, 1], 50051).into(), |v| v.parse().ok())?,
            http_addr: raw.parse("http_addr", ([127, 0, 0, 1], 8080).into(), |v| v.parse().ok())?,
            issuer: url("issuer", "http://127.0.0.1:50051")?,
            audience: raw.get("audience").unwrap_or("authd").trim().to_string(),
            key_encryption_key: Secret::new(kek),
            signing_alg,
            access_token_ttl,
            refresh_token_ttl,
            bootstrap_admin_email,
            bootstrap_admin_password,
            public_url: url("public_url", "http://127.0.0.1:8080")?,
            smtp_url: match raw.get("smtp_url").map(str::trim) {
                Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                    Some(Secret::new(url.to_string()))
                }
                Some(_) => return Err(ConfigError::new("smtp_url", "must be an smtp:// or smtps:// URL")),
                None => None,
            },
            mail_dir: PathBuf::from(raw.get("mail_dir").unwrap_or("./.data/mail")),
            mail_from: raw.get("mail_from").unwrap_or("authd@localhost").trim().to_string(),
            require_verified_email: raw.boolean("require_verified_email", false)?,
            rate_limits: raw.boolean("rate_limits", true)?,
            lockout_threshold: raw.parse("lockout_threshold", 5, |v| v.parse().ok())?,
            lockout_duration: raw.duration("lockout_duration", "30m")?,
            trusted_proxies: raw
                .get("trusted_proxies")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    crate::net::Cidr::parse(s).ok_or_else(|| {
                        ConfigError::new("trusted_proxies", format!("`{s}` is not an address or a CIDR block"))
                    })
                })
                .collect::<Result<_, _>>()?,
            account_deletion_grace: raw.duration("account_deletion_grace", "30d")?,
            max_sessions_per_user: raw.parse("max_sessions_per_user", 5, |v| v.parse().ok())?,
            single_session: raw.boolean("single_session", false)?,
            shutdown_grace: raw.duration("shutdown_grace", "20s")?,
            audit_retention: raw.duration("audit_retention", "90d")?,
            request_timeout: raw.duration("request_timeout", "30s")?,
            argon2,
            password_policy: crate::domain::PasswordPolicy {
                min_score: raw.parse("password_min_score", 2, |v| v.parse().ok().filter(|s| *s <= 4))?,
                require_uppercase: raw.boolean("password_require_uppercase", false)?,
                require_digit: raw.boolean("password_require_digit", false)?,
                require_symbol: raw.boolean("password_require_symbol", false)?,
            },
            user_grantable_scopes: raw
                .get("user_grantable_scopes")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    crate::domain::Scope::parse(s)
                        .map(|scope| scope.as_str().to_string())
                        .map_err(|_| ConfigError::new("user_grantable_scopes", format!("`{s}` is not a scope")))
                })
                .collect::<Result<_, _>>()?,
            password_hash_concurrency: raw.parse("password_hash_concurrency", 0, |v| v.parse().ok())?,
            token_cache_size: raw.parse("token_cache_size", DEFAULT_TOKEN_CACHE_SIZE, |v| v.parse().ok())?,
            usage_flush_interval: raw.duration("usage_flush_interval", "30s")?,
            key_refresh_interval: raw.duration("key_refresh_interval", "30s")?,
            health_probe_interval: raw.duration("health_probe_interval", "2s")?,
            redis_namespace: raw.get("redis_namespace").unwrap_or("authd").trim().to_string(),
            revocation_resync_interval: raw.duration("revocation_resync_interval", "1s")?,
            watch_heartbeat_interval: raw.duration("watch_heartbeat_interval", "15s")?,
            mail_rate_per_hour: raw.parse("mail_rate_per_hour", 3, |v| v.parse().ok())?,
            mail_poll_interval: raw.duration("mail_poll_interval", "5s")?,
            housekeeping_interval: raw.duration("housekeeping_interval", "30s")?,
            otel_endpoint: raw.get("otel_exporter_otlp_endpoint").map(str::to_string),
        })
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
        assert_eq!(s.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(s.signing_alg, SigningAlg::EdDsa);
        assert_eq!(s.audience, "authd");
        assert_eq!(s.max_sessions_per_user, 5);
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
        assert_eq!(s.signing_alg, SigningAlg::Rs256, "the environment overrides the file");
        assert_eq!(s.key_encryption_key.expose(), &[0u8; 32]);
        assert!(!format!("{s:?}").contains("postgres://a@b/c"));
        std::fs::write(&toml_path, "databse_url = \"x\"\n").unwrap();
        let err = Settings::from_sources(&env, Some(&toml_path)).unwrap_err();
        assert!(err.to_string().contains("databse_url"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
