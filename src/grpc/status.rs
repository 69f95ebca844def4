//! The one mapping from domain errors to gRPC status codes. Messages never carry SQL, tokens,
//! passwords or internal detail; `INVALID_ARGUMENT` names the field in a `google.rpc.BadRequest`.

use crate::error::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo` reason of [`Error::LinkRequired`].
pub const LINK_REQUIRED: &str = "ACCOUNT_LINK_REQUIRED";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {reason}"),
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            Error::Unauthenticated => Status::unauthenticated("invalid credentials"),
            Error::PermissionDenied(what) => Status::permission_denied(format!("permission denied: {what}")),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
            Error::FailedPrecondition(why) => Status::failed_precondition(why),
            Error::LinkRequired => Status::with_error_details(
                Code::FailedPrecondition,
                Error::LinkRequired.to_string(),
                ErrorDetails::with_error_info(LINK_REQUIRED, "authd", std::collections::HashMap::new()),
            ),
            Error::Unimplemented(what) => Status::unimplemented(format!("{what} is not implemented yet")),
            Error::Unavailable => Status::unavailable("service temporarily unavailable; retry later"),
            Error::RateLimited(retry_after) => Status::with_error_details(
                Code::ResourceExhausted,
                "too many requests; retry later",
                ErrorDetails::with_retry_info(Some(retry_after.max(std::time::Duration::from_millis(1)))),
            ),
            Error::Internal(detail) => {
                // Logged once, here at the boundary; the caller learns nothing of it.
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
