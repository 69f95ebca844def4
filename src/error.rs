//! The one error type of authd's rules. `grpc::status` maps it to a `tonic::Status` in one place.

/// What went wrong, in the terms a caller may be told. Internal details stay in the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; `field` names the request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// No valid credential, or login failed. One message for every cause.
    #[error("invalid credentials")]
    Unauthenticated,
    #[error("permission denied: {0}")]
    PermissionDenied(std::borrow::Cow<'static, str>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// A first sign-in with a provider found an account with the same address that it may not
    /// link by itself: the person signs in with the password and links the provider.
    #[error("an account with this address exists; sign in to it and link the provider")]
    LinkRequired,
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// Over a rate limit; try again after this long.
    #[error("too many requests")]
    RateLimited(std::time::Duration),
    /// The database (or another store) cannot be reached.
    #[error("service temporarily unavailable")]
    Unavailable,
    /// A bug or an unexpected state; the detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub fn denied(why: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self::PermissionDenied(why.into())
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The whole story, for operators (start-up errors, logs); never for callers.
    pub fn detail(&self) -> String {
        match self {
            Self::Internal(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
