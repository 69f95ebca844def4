//! Federated sign-in: the configured OpenID providers, their key sets and the ID tokens they
//! issue. The rules an ID token is verified under are `authd-client`'s ([`IdTokenRules`]); this
//! module finds the keys: `<issuer>/.well-known/openid-configuration` names the `jwks_uri`, both
//! fetched lazily and cached for the JWKS's `Cache-Control: max-age` (10 minutes without one). A
//! token naming a key the cached set lacks refetches it, at most once per 30 s per provider and
//! with one fetch in flight, so a flood of made-up `kid`s costs the provider next to nothing.

mod keys;

use crate::config::ProviderSettings;
use crate::error::{Error, Result};
use authd_client::id_token::{IdClaims, IdTokenError, IdTokenRules};
use chrono::{DateTime, Utc};
use keys::ProviderKeys;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One configured provider.
pub struct Provider {
    pub settings: ProviderSettings,
    rules: IdTokenRules,
    keys: ProviderKeys,
}

/// The configured providers, by name.
pub struct Providers {
    by_name: BTreeMap<String, Arc<Provider>>,
}

impl Providers {
    pub fn new(settings: &[ProviderSettings]) -> anyhow::Result<Self> {
        let http = keys::http_client()?;
        let by_name = settings
            .iter()
            .map(|s| {
                // As configured, and with or without a trailing slash (Auth0's issuers end in one).
                let mut issuers = vec![s.issuer.clone()];
                issuers.push(match s.issuer.strip_suffix('/') {
                    Some(bare) => bare.to_string(),
                    None => format!("{}/", s.issuer),
                });
                // Google's ID tokens carry either spelling of its issuer.
                if s.issuer == "https://accounts.google.com" {
                    issuers.push("accounts.google.com".into());
                }
                let provider = Provider {
                    rules: IdTokenRules {
                        issuers,
                        client_ids: s.client_ids.clone(),
                    },
                    keys: ProviderKeys::new(http.clone(), &s.issuer),
                    settings: s.clone(),
                };
                (s.name.clone(), Arc::new(provider))
            })
            .collect();
        Ok(Self { by_name })
    }

    /// Every provider, in name order.
    pub fn list(&self) -> impl Iterator<Item = &Provider> {
        self.by_name.values().map(Arc::as_ref)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Provider>> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invalid("provider", "is not a configured provider (see ListProviders)"))
    }

    /// The verified claims of an ID token of `provider`. A token that does not verify is
    /// `Unauthenticated`; a provider that cannot be reached is `Unavailable`.
    pub async fn verify(
        &self,
        provider: &Provider,
        id_token: &str,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IdClaims> {
        let kid = authd_client::id_token::kid_of(id_token);
        let keys = provider.keys.for_kid(kid.as_deref()).await?;
        match provider.rules.verify(&keys, id_token, nonce, now) {
            Ok(claims) => Ok(claims),
            Err(rejection) => {
                tracing::debug!(provider = %provider.settings.name, %rejection, "ID token refused");
                Err(Error::Unauthenticated)
            }
        }
    }
}

impl From<IdTokenError> for Error {
    fn from(_: IdTokenError) -> Self {
        Error::Unauthenticated
    }
}
