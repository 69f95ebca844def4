//! What a gateway asks of authd for each request it forwards: may this request pass, as whom,
//! and with which headers. One decision, answered over two protocols: Envoy's external
//! authorization (`grpc::check`) and HTTP forward-auth (`http`).
//!
//! The end user's credential is checked exactly as `Introspect` checks it, so a hot token costs
//! no I/O; a credential whose revocation cannot be proven is an error, never an allow.

use crate::authn::{ActiveCredential, Authenticator};
use crate::error::{Error, Result};

/// The prefix of the headers authd sets on an allowed request. Any other header a client sent
/// that looks like one (`x-authd-*`, `x_authd_*`, any case) is removed, so none can be spoofed.
pub const HEADER_PREFIX: &str = "x-authd-";

/// The headers authd sets on every allowed request (those without a value, empty).
pub const HEADERS: [&str; 6] = [
    "x-authd-sub",
    "x-authd-sid",
    "x-authd-scope",
    "x-authd-roles",
    "x-authd-client-id",
    "x-authd-token-type",
];

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "authd";

/// Who the request is from, as the upstream sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    /// The session of an access token; empty for an API key.
    pub sid: String,
    pub scope: String,
    pub roles: Vec<String>,
    pub client_id: String,
    /// `access_token` or `api_key`.
    pub token_type: &'static str,
}

impl Identity {
    fn of(credential: ActiveCredential) -> Self {
        match credential {
            ActiveCredential::AccessToken(claims) => Self {
                sub: claims.sub.clone(),
                sid: claims.sid.clone(),
                scope: claims.scope.clone(),
                roles: claims.roles.clone(),
                client_id: claims.client_id.clone(),
                token_type: "access_token",
            },
            // A key holds its scopes and no role, as it introspects.
            ActiveCredential::ApiKey(key) => Self {
                sub: key.user_id.to_string(),
                sid: String::new(),
                scope: key.scopes.join(" "),
                roles: Vec::new(),
                client_id: key.prefix,
                token_type: "api_key",
            },
        }
    }

    /// Every header of [`HEADERS`] with its value (empty when the credential has none: an API
    /// key's session and roles).
    pub fn all_headers(&self) -> [(&'static str, String); 6] {
        [
            (HEADERS[0], self.sub.clone()),
            (HEADERS[1], self.sid.clone()),
            (HEADERS[2], self.scope.clone()),
            (HEADERS[3], self.roles.join(",")),
            (HEADERS[4], self.client_id.clone()),
            (HEADERS[5], self.token_type.to_string()),
        ]
    }

    /// The headers with a value.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.all_headers()
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect()
    }

    fn holds(&self, scope: &str) -> bool {
        self.scope.split_whitespace().any(|held| held == scope)
    }
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Identity),
    /// No live credential; `presented` tells whether one was sent at all.
    Unauthenticated {
        presented: bool,
    },
    /// A live credential without every scope the route requires.
    Forbidden {
        required: String,
    },
}

impl Decision {
    /// The `WWW-Authenticate` challenge of a refusal (RFC 6750 §3).
    pub fn challenge(&self) -> Option<String> {
        match self {
            Self::Allow(_) => None,
            Self::Unauthenticated { presented: false } => Some(format!("Bearer realm=\"{REALM}\"")),
            Self::Unauthenticated { presented: true } => {
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
            }
            Self::Forbidden { required } => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{required}\""
            )),
        }
    }
}

/// The scopes a route requires, from a list separated by spaces or commas; each must be a
/// well-formed scope, else the gateway is misconfigured (`InvalidArgument`).
pub fn required_scopes(list: &str) -> Result<Vec<String>> {
    list.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::domain::Scope::parse(s)
                .map(|scope| scope.as_str().to_string())
                .map_err(|_| Error::invalid("required_scopes", "is not a list of scopes"))
        })
        .collect()
}

/// Decides on the credential of an `authorization: Bearer …` header. `Unavailable` when the
/// credential's revocation cannot be proven.
pub async fn decide(
    authenticator: &Authenticator,
    authorization: Option<&str>,
    required: &[String],
) -> Result<Decision> {
    let Some(header) = authorization else {
        return Ok(Decision::Unauthenticated { presented: false });
    };
    let Some(credential) = crate::authn::bearer_of(header) else {
        return Ok(Decision::Unauthenticated { presented: true });
    };
    let Some(active) = authenticator.validate_credential(credential).await? else {
        return Ok(Decision::Unauthenticated { presented: true });
    };
    let identity = Identity::of(active);
    if required.iter().all(|scope| identity.holds(scope)) {
        Ok(Decision::Allow(identity))
    } else {
        Ok(Decision::Forbidden {
            required: required.join(" "),
        })
    }
}

/// The headers among `names` that an allowed request must lose: every one that looks like authd's
/// (`x-authd-*`, or with underscores, which some upstreams read as the same header) and is not
/// one of the [`HEADERS`] authd overwrites.
pub fn spoofed<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut removed: Vec<String> = names
        .into_iter()
        .map(str::to_ascii_lowercase)
        .filter(|name| name.replace('_', "-").starts_with(HEADER_PREFIX) && !HEADERS.contains(&name.as_str()))
        .collect();
    removed.sort();
    removed.dedup();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(scope: &str) -> Identity {
        Identity {
            sub: "u".into(),
            sid: String::new(),
            scope: scope.into(),
            roles: Vec::new(),
            client_id: "authd_x".into(),
            token_type: "api_key",
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let none = Decision::Unauthenticated { presented: false };
        assert_eq!(none.challenge().unwrap(), "Bearer realm=\"authd\"");
        let bad = Decision::Unauthenticated { presented: true };
        assert!(bad.challenge().unwrap().ends_with("error=\"invalid_token\""));
        let scope = Decision::Forbidden {
            required: "a:b c:d".into(),
        };
        assert!(
            scope
                .challenge()
                .unwrap()
                .contains("error=\"insufficient_scope\", scope=\"a:b c:d\"")
        );
    }

    #[test]
    fn scopes_are_read_from_spaces_or_commas_and_must_all_be_held() {
        assert_eq!(
            required_scopes("tasks:read, tasks:write").unwrap(),
            ["tasks:read", "tasks:write"]
        );
        assert!(required_scopes("tasks:read \"x").is_err());
        assert!(identity("tasks:read tasks:write").holds("tasks:write"));
        assert!(!identity("tasks:readwrite").holds("tasks:read"));
    }

    #[test]
    fn headers_authd_does_not_set_are_removed() {
        let who = identity("tasks:read");
        let names = [
            "X-Authd-Sub",
            "x-authd-sid",
            "x-authd-admin",
            "X_Authd_Roles",
            "x-other",
        ];
        // authd overwrites its own six (an API key's session with nothing); the rest go.
        assert_eq!(spoofed(names), ["x-authd-admin", "x_authd_roles"]);
        assert_eq!(who.all_headers()[1], ("x-authd-sid", String::new()));
        assert!(who.headers().iter().all(|(name, _)| HEADERS.contains(name)));
    }
}
