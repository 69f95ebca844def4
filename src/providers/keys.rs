//! A provider's key set: discovered, fetched and cached (see the module above).

use crate::error::{Error, Result};
use crate::telemetry::spans;
use authd_client::KeySet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::Instrument as _;

/// How long a key set is used without a `Cache-Control: max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// The longest and shortest a key set is kept, whatever the provider says.
const MAX_AGE_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// A token with a `kid` the set lacks refetches it at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// One fetch of a document may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed fetch, calls are answered UNAVAILABLE at once for this long.
const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// Larger documents are not a provider's.
const MAX_DOCUMENT: usize = 1 << 20;

/// The HTTP client every provider shares: rustls (ring, the web's root certificates), no
/// redirects, short timeouts.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("authd/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

struct Cached {
    keys: Arc<KeySet>,
    expires: Instant,
    /// The last fetch made for a `kid` the set lacked (or failed): the next waits 30 s.
    refetched: Option<Instant>,
}

pub struct ProviderKeys {
    http: reqwest::Client,
    issuer: String,
    cached: RwLock<Option<Cached>>,
    /// Held while fetching: one fetch in flight per provider. Holds when the last fetch failed.
    fetching: Mutex<Option<Instant>>,
}

impl ProviderKeys {
    pub fn new(http: reqwest::Client, issuer: &str) -> Self {
        Self {
            http,
            issuer: issuer.trim_end_matches('/').to_string(),
            cached: RwLock::new(None),
            fetching: Mutex::new(None),
        }
    }

    /// The cached set when it is fresh and holds `kid` (or was refetched for an unknown `kid`
    /// too recently to fetch again); `None` when a fetch is due.
    fn usable(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let cached = self.cached.read().expect("provider keys lock");
        let cached = cached.as_ref()?;
        let now = Instant::now();
        let fresh = cached.expires > now;
        let holds = kid.is_none_or(|kid| cached.keys.contains(kid));
        let throttled = cached
            .refetched
            .is_some_and(|at| now.duration_since(at) < REFETCH_AFTER);
        (fresh && (holds || throttled)).then(|| cached.keys.clone())
    }

    /// The key set to verify a token naming `kid` with.
    pub async fn for_kid(&self, kid: Option<&str>) -> Result<Arc<KeySet>> {
        if let Some(keys) = self.usable(kid) {
            return Ok(keys);
        }
        let mut failed_at = self.fetching.lock().await;
        // Another call may have fetched while this one waited.
        if let Some(keys) = self.usable(kid) {
            return Ok(keys);
        }
        // A provider that just failed is not asked again at once (the callers waiting behind a
        // fetch that timed out would each wait as long again).
        if failed_at.is_some_and(|at| at.elapsed() < FAILURE_HOLD) {
            return self.stale_or_unavailable();
        }
        // A fetch for a kid the fresh set lacks counts toward the 30 s; one for an expired
        // (or missing) set does not.
        let now = Instant::now();
        let for_unknown_kid = {
            let cached = self.cached.read().expect("provider keys lock");
            cached.as_ref().is_some_and(|c| c.expires > now)
        };
        let fetched = self.fetch().instrument(tracing::info_span!("oidc.discovery")).await;
        *failed_at = fetched.is_err().then(Instant::now);
        match fetched {
            Ok((keys, max_age)) => {
                let keys = Arc::new(keys);
                let now = Instant::now();
                *self.cached.write().expect("provider keys lock") = Some(Cached {
                    keys: keys.clone(),
                    expires: now + max_age,
                    // A set fetched because the last one expired starts without a throttle.
                    refetched: for_unknown_kid.then_some(now),
                });
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the provider's keys");
                // A fresh set stays in use, and its 30 s throttle starts now.
                if let Some(c) = self.cached.write().expect("provider keys lock").as_mut()
                    && c.expires > Instant::now()
                {
                    c.refetched = Some(Instant::now());
                }
                self.stale_or_unavailable()
            }
        }
    }

    /// When the provider cannot be asked: a set still fresh (the token named an unknown kid)
    /// stays in use; otherwise nothing can be verified now.
    fn stale_or_unavailable(&self) -> Result<Arc<KeySet>> {
        let cached = self.cached.read().expect("provider keys lock");
        cached
            .as_ref()
            .filter(|c| c.expires > Instant::now())
            .map(|c| c.keys.clone())
            .ok_or(Error::Unavailable)
    }

    /// Discovery, then the JWKS; with how long the set may be kept.
    async fn fetch(&self) -> anyhow::Result<(KeySet, Duration)> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer);
        let (discovery, _) = self.get(&discovery_url).await?;
        let discovery: serde_json::Value = serde_json::from_slice(&discovery)?;
        let issuer = discovery.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
        if issuer.trim_end_matches('/') != self.issuer {
            anyhow::bail!("the discovery document names the issuer `{issuer}`");
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow::anyhow!("the discovery document has no jwks_uri"))?;
        crate::config::check_provider_url(jwks_uri).map_err(|e| anyhow::anyhow!("jwks_uri: {e}"))?;
        // Plain http only for a provider that is itself on loopback http: an https provider's
        // document must not send authd to probe the machine's own services.
        if jwks_uri.starts_with("http://") && !self.issuer.starts_with("http://") {
            anyhow::bail!("jwks_uri `{jwks_uri}` is plain http for an https issuer");
        }
        let (jwks, max_age) = self.get(jwks_uri).await?;
        let keys = KeySet::from_provider_jwks_json(std::str::from_utf8(&jwks)?)?;
        let max_age = max_age
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MAX_AGE_RANGE.0, MAX_AGE_RANGE.1);
        Ok((keys, max_age))
    }

    /// One document, at most [`MAX_DOCUMENT`] bytes, with its `Cache-Control: max-age`.
    async fn get(&self, url: &str) -> anyhow::Result<(Vec<u8>, Option<Duration>)> {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        self.get_document(url).instrument(spans::http_get(&host)).await
    }

    async fn get_document(&self, url: &str) -> anyhow::Result<(Vec<u8>, Option<Duration>)> {
        let mut response = self.http.get(url).send().await?.error_for_status()?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                anyhow::bail!("{url} is larger than {MAX_DOCUMENT} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// The `max-age` of a `Cache-Control` header.
fn max_age(header: &str) -> Option<Duration> {
    header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("max-age="))
        .find_map(|secs| secs.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_age_is_read_from_cache_control() {
        use std::time::Duration;
        assert_eq!(
            super::max_age("public, max-age=19800, must-revalidate"),
            Some(Duration::from_secs(19800))
        );
        assert_eq!(super::max_age("no-cache"), None);
        assert_eq!(super::max_age("max-age=abc"), None);
    }
}
