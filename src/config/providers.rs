//! Federated sign-in providers: `AUTHD_OIDC_PROVIDERS` names them, and each name reads its own
//! settings, `AUTHD_OIDC_<NAME>_ISSUER`, `_CLIENT_IDS`, `_DISPLAY_NAME`, `_TRUST_EMAIL` (in the
//! TOML file: an `[oidc.NAME]` table of `issuer`, `client_ids`, `display_name`, `trust_email`).

use super::ConfigError;
use super::source::Sources;

/// The key that lists the providers.
pub const PROVIDERS_KEY: &str = "oidc_providers";
/// What each provider reads.
pub const PROVIDER_FIELDS: [&str; 4] = ["issuer", "client_ids", "display_name", "trust_email"];

/// One provider's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    /// As `LoginWithProvider` names it, e.g. `google`.
    pub name: String,
    pub display_name: String,
    /// The issuer its ID tokens carry, as configured.
    pub issuer: String,
    /// The audiences accepted (the app's client ids at the provider).
    pub client_ids: Vec<String>,
    /// Whether its `email_verified` may link a first sign-in to an existing account.
    pub trust_email: bool,
}

/// The key of one provider's setting.
pub fn provider_key(name: &str, field: &str) -> String {
    format!("oidc_{name}_{field}")
}

/// The names in `AUTHD_OIDC_PROVIDERS` (comma-separated), lower-cased.
pub(super) fn provider_names(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Presets: issuer and display name.
fn preset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "google" => Some(("https://accounts.google.com", "Google")),
        "apple" => Some(("https://appleid.apple.com", "Apple")),
        _ => None,
    }
}

/// `https://`, or `http://` on a loopback host only (a provider served for tests or on the
/// same machine).
pub fn check_provider_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL".into());
    };
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(host, _)| host),
    };
    if host.is_empty() || rest.contains('@') {
        return Err("is not a URL with a host".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "::1" | "localhost") => Ok(()),
        "http" => Err("must be https:// (http:// only on a loopback host)".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

/// The first `AUTHD_OIDC_*` variable among `names` that is no setting of a listed provider (a
/// typo, or a provider `AUTHD_OIDC_PROVIDERS` does not list): an error naming it.
pub(super) fn check_environment<'a>(
    providers: &[ProviderSettings],
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    for name in names {
        let Some(rest) = name.strip_prefix("AUTHD_OIDC_") else {
            continue;
        };
        let rest = rest.strip_suffix("_FILE").unwrap_or(rest);
        let known = rest == "PROVIDERS"
            || providers.iter().any(|p| {
                PROVIDER_FIELDS
                    .iter()
                    .any(|field| rest == format!("{}_{}", p.name, field).to_ascii_uppercase())
            });
        if !known {
            return Err(ConfigError {
                name: name.to_string(),
                message: "is not a setting of a provider that AUTHD_OIDC_PROVIDERS lists".into(),
            });
        }
    }
    Ok(())
}

/// Every configured provider, checked: a bad setting is an error naming it.
pub(super) fn providers(sources: &Sources) -> Result<Vec<ProviderSettings>, ConfigError> {
    let mut out: Vec<ProviderSettings> = Vec::new();
    for name in provider_names(sources.get(PROVIDERS_KEY)) {
        if name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::new(
                PROVIDERS_KEY,
                format!("`{name}` is not a provider name (a-z, 0-9 and _, at most 32)"),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(ConfigError::new(PROVIDERS_KEY, format!("`{name}` is listed twice")));
        }
        let get = |field: &str| sources.get(&provider_key(&name, field)).map(str::trim);
        let fail = |field: &str, message: String| ConfigError::new(&provider_key(&name, field), message);
        let issuer = match (get("issuer"), preset(&name)) {
            (Some(issuer), _) => issuer.to_string(),
            (None, Some((issuer, _))) => issuer.to_string(),
            (None, None) => return Err(fail("issuer", "is required for a provider that is not a preset".into())),
        };
        check_provider_url(&issuer).map_err(|why| fail("issuer", why))?;
        let client_ids: Vec<String> = get("client_ids")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect();
        if client_ids.is_empty() {
            return Err(fail(
                "client_ids",
                "is required: the client ids ID tokens must be issued to".into(),
            ));
        }
        let display_name = get("display_name")
            .map(str::to_string)
            .or_else(|| preset(&name).map(|(_, shown)| shown.to_string()))
            .unwrap_or_else(|| name.clone());
        let trust_email = match get("trust_email") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(fail("trust_email", format!("must be true or false, not `{other}`"))),
        };
        out.push(ProviderSettings {
            name,
            display_name,
            issuer,
            client_ids,
            trust_email,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_or_unlisted_provider_variable_is_an_error() {
        let corp = ProviderSettings {
            name: "corp".into(),
            display_name: "corp".into(),
            issuer: "https://sso.example.com".into(),
            client_ids: vec!["x".into()],
            trust_email: false,
        };
        let fine = [
            "AUTHD_OIDC_PROVIDERS",
            "AUTHD_OIDC_CORP_ISSUER",
            "AUTHD_OIDC_CORP_CLIENT_IDS_FILE",
            "PATH",
        ];
        assert!(check_environment(std::slice::from_ref(&corp), fine).is_ok());
        for stray in ["AUTHD_OIDC_CORP_TRUST_EMAILS", "AUTHD_OIDC_OTHER_ISSUER"] {
            let err = check_environment(std::slice::from_ref(&corp), [stray]).unwrap_err();
            assert_eq!(err.name, stray);
        }
    }

    #[test]
    fn provider_urls_are_https_or_loopback_http() {
        assert!(check_provider_url("https://accounts.google.com").is_ok());
        assert!(check_provider_url("http://127.0.0.1:8123/realms/x").is_ok());
        assert!(check_provider_url("http://[::1]:80").is_ok());
        assert!(check_provider_url("http://localhost").is_ok());
        for bad in [
            "http://example.com",
            "ftp://x",
            "accounts.google.com",
            "https://",
            "http://127.0.0.1@evil.com",
        ] {
            assert!(check_provider_url(bad).is_err(), "{bad}");
        }
    }
}
