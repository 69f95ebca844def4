//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization, answered from the
//! gateway decision ([`crate::gateway`]). The gateway itself authenticates like any introspecting
//! caller (gRPC metadata `authorization: Bearer …` with `tokens:introspect`); the end user's
//! credential is the `authorization` header of the request Envoy forwards.

use super::request::optional_caller;
use crate::authn::Authenticator;
use crate::error::Error;
use crate::gateway::{self, Decision, Identity};
use crate::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction};
use crate::proto::envoy::service::auth::v3::authorization_server::Authorization;
use crate::proto::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use crate::proto::envoy::r#type::v3::{HttpStatus, StatusCode};
use crate::proto::google::rpc;
use prost_types::{ListValue, Struct, Value, value::Kind};
use std::borrow::Cow;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// `envoy.service.auth.v3.Authorization`.
pub struct CheckApi {
    authenticator: Arc<Authenticator>,
    /// `AUTHD_GATEWAY_REMOVE_AUTHORIZATION`: the upstream does not see the user's credential.
    remove_authorization: bool,
}

impl CheckApi {
    pub fn new(authenticator: Arc<Authenticator>, remove_authorization: bool) -> Self {
        Self {
            authenticator,
            remove_authorization,
        }
    }
}

/// What `Check` reads of the forwarded request's headers (in either form Envoy sends them),
/// borrowed: the `authorization` value, and every header name (for the spoofing check).
struct Forwarded<'a> {
    /// The one `authorization` value; a value no credential matches when there are several (the
    /// upstream might read another one than authd checked).
    authorization: Option<Cow<'a, str>>,
    names: Vec<&'a str>,
}

fn forwarded(attributes: &AttributeContext) -> Forwarded<'_> {
    let mut found = Forwarded {
        authorization: None,
        names: Vec::new(),
    };
    let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
        return found;
    };
    let map = http.header_map.iter().flat_map(|m| &m.headers).map(|h| {
        let value = if h.raw_value.is_empty() {
            Cow::Borrowed(h.value.as_str())
        } else {
            String::from_utf8_lossy(&h.raw_value)
        };
        (h.key.as_str(), value)
    });
    let plain = http
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())));
    for (name, value) in plain.chain(map) {
        found.names.push(name);
        if name.eq_ignore_ascii_case("authorization") {
            found.authorization = match found.authorization {
                None => Some(value),
                Some(_) => Some(Cow::Borrowed("")),
            };
        }
    }
    found
}

/// A header set on the request, replacing any the client sent; an empty value is kept (so a
/// client's value is replaced by nothing, not left).
fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value,
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: true,
        ..Default::default()
    }
}

fn status(code: Code, message: &str) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.to_string(),
        details: Vec::new(),
    }
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

/// The identity as `dynamic_metadata`, for Envoy's later filters and access log.
fn metadata(identity: &Identity) -> Struct {
    let roles = ListValue {
        values: identity.roles.iter().map(|r| string(r)).collect(),
    };
    let fields = [
        ("sub", string(&identity.sub)),
        ("sid", string(&identity.sid)),
        ("scope", string(&identity.scope)),
        ("client_id", string(&identity.client_id)),
        ("token_type", string(identity.token_type)),
        (
            "roles",
            Value {
                kind: Some(Kind::ListValue(roles)),
            },
        ),
    ];
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn denied(code: Code, http: StatusCode, message: &str, headers: Vec<HeaderValueOption>) -> CheckResponse {
    CheckResponse {
        status: Some(status(code, message)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http.into() }),
            headers,
            body: String::new(),
        })),
        dynamic_metadata: None,
    }
}

fn refused(decision: &Decision) -> CheckResponse {
    let (code, http, message) = match decision {
        Decision::Forbidden { .. } => (Code::PermissionDenied, StatusCode::Forbidden, "insufficient scope"),
        _ => (Code::Unauthenticated, StatusCode::Unauthorized, "no valid credential"),
    };
    let challenge = decision.challenge().unwrap_or_default();
    denied(code, http, message, vec![header("www-authenticate", challenge)])
}

/// A gateway that is not allowed to ask, or a route that asks for nonsense, gets a refusal, not
/// an error: an error would let a gateway with `failure_mode_allow` pass every request.
fn misconfigured(message: &str) -> CheckResponse {
    denied(Code::PermissionDenied, StatusCode::Forbidden, message, Vec::new())
}

#[tonic::async_trait]
impl Authorization for CheckApi {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        match optional_caller(&request).await {
            Ok(Some(gateway)) if gateway.can_introspect() => {}
            // Whether the gateway's own credential is live cannot be told now.
            Err(status) if status.code() == Code::Unavailable => return Err(status),
            _ => {
                let why = "the gateway's credential is missing, not live, or lacks tokens:introspect";
                return Ok(Response::new(misconfigured(why)));
            }
        }
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let headers = forwarded(&attributes);
        let route_scopes = attributes.context_extensions.get("required_scopes");
        let Ok(required) = gateway::required_scopes(route_scopes.map(String::as_str).unwrap_or_default()) else {
            return Ok(Response::new(misconfigured(
                "the route's required_scopes is not a list of scopes",
            )));
        };
        // Revocation that cannot be proven is an error, never an allow: Envoy's
        // `failure_mode_allow` decides what the gateway does then.
        let decision = match gateway::decide(&self.authenticator, headers.authorization.as_deref(), &required).await {
            Ok(decision) => decision,
            Err(Error::Unavailable) => return Err(Error::Unavailable.into()),
            // Any other failure is a refusal, not an error that failure_mode_allow would pass.
            Err(other) => {
                tracing::error!(error = %other.detail(), "Check failed");
                let failed = denied(
                    Code::Internal,
                    StatusCode::InternalServerError,
                    "internal error",
                    Vec::new(),
                );
                return Ok(Response::new(failed));
            }
        };
        let Decision::Allow(identity) = &decision else {
            return Ok(Response::new(refused(&decision)));
        };
        let mut headers_to_remove = gateway::spoofed(headers.names.iter().copied());
        if self.remove_authorization {
            headers_to_remove.push("authorization".into());
        }
        Ok(Response::new(CheckResponse {
            status: Some(status(Code::Ok, "")),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: identity
                    .all_headers()
                    .into_iter()
                    .map(|(key, value)| header(key, value))
                    .collect(),
                headers_to_remove,
                ..Default::default()
            })),
            dynamic_metadata: Some(metadata(identity)),
        }))
    }
}
