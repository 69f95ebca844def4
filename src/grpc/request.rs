//! What every adapter reads from a request besides its message: the bearer credential and the
//! client's address and user agent.

use crate::app::ClientInfo;
use tonic::Request;
use tonic::metadata::MetadataMap;

/// The credential of `authorization: Bearer <credential>`; `None` when absent or malformed.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

pub fn client_info<T>(request: &Request<T>) -> ClientInfo {
    ClientInfo {
        ip_address: request.remote_addr().map(|addr| addr.ip().to_string()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect()),
    }
}
