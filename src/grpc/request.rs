//! What every adapter reads from a request besides its message: the bearer credential and the
//! client's address and user agent.

use crate::identity::ClientInfo;
use tonic::Request;
use tonic::metadata::MetadataMap;

/// The credential of `authorization: Bearer <credential>`; `None` when absent, malformed or
/// longer than any credential authd issues.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    if value.len() > super::bounds::CREDENTIAL {
        return None;
    }
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// The caller's address (through trusted proxies, see [`crate::net::client_address`]) and user agent.
pub fn client_info<T>(app: &crate::app::App, request: &Request<T>) -> ClientInfo {
    let forwarded = request.metadata().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let address = crate::net::client_address(
        request.remote_addr().map(|a| a.ip()),
        forwarded,
        &app.settings.trusted_proxies,
    );
    ClientInfo {
        ip_address: address.map(|ip| ip.to_string()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect()),
    }
}
