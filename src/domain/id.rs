//! Ids given in requests, typed by what they name: each parses with the request field it comes
//! from named in the error.

use crate::error::Error;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// The id in the request field it is named by; `InvalidArgument` otherwise.
            pub fn parse(text: &str) -> Result<Self, Error> {
                Self::parse_field(text, $field)
            }

            /// The id in `field`, for requests that name it otherwise.
            pub fn parse_field(text: &str, field: &'static str) -> Result<Self, Error> {
                Uuid::parse_str(text.trim())
                    .map(Self)
                    .map_err(|_| Error::invalid(field, "is not a valid id"))
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

typed_id!(
    /// A user's id (`user_id`).
    UserId,
    "user_id"
);
typed_id!(
    /// A session's id (`session_id`).
    SessionId,
    "session_id"
);
typed_id!(
    /// An API key's id (`id`).
    ApiKeyId,
    "id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_name_their_field() {
        let id = Uuid::now_v7();
        assert_eq!(UserId::parse(&format!(" {id} ")).unwrap().uuid(), id);
        assert_eq!(SessionId::parse(&id.to_string()).unwrap().to_string(), id.to_string());
        match ApiKeyId::parse("nope") {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "id"),
            other => panic!("{other:?}"),
        }
    }
}
