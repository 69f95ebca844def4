use crate::error::Error;
use crate::secret::Secret;

/// A password of 8 to 128 characters (Unicode scalar values), kept exactly as typed.
/// Longer input is refused before any hashing work.
#[derive(Clone, Debug)]
pub struct Password(Secret<String>);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// Validates a new password; `field` names the request field in the error.
    pub fn parse(input: &str, field: &'static str) -> Result<Self, Error> {
        // Checked on bytes first so that a huge input costs nothing to refuse.
        if input.len() > Self::MAX_CHARS * 4 || input.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if input.chars().count() < Self::MIN_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        Ok(Self(Secret::new(input.to_string())))
    }

    /// A password presented to log in: never validated beyond its length bound, which is enforced
    /// before hashing. `None` when it cannot possibly be right.
    pub fn presented(input: &str) -> Option<Self> {
        (input.len() <= Self::MAX_CHARS * 4 && input.chars().count() <= Self::MAX_CHARS)
            .then(|| Self(Secret::new(input.to_string())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds_in_characters() {
        assert!(Password::parse("short", "password").is_err());
        assert!(Password::parse("ééééééé", "password").is_err());
        assert!(Password::parse("éééééééé", "password").is_ok());
        assert!(Password::parse(&"x".repeat(128), "password").is_ok());
        assert!(Password::parse(&"x".repeat(129), "password").is_err());
        assert!(Password::presented(&"x".repeat(1 << 20)).is_none());
        assert!(!format!("{:?}", Password::parse("sup3r-secret", "p").unwrap()).contains("sup3r"));
    }
}
