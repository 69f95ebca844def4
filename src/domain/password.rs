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

/// What a new password must be beyond its length: hard to guess (zxcvbn's score, 0 to 4, with
/// the account's own email and username counted as guessable), and optionally composed of
/// certain kinds of character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_score: u8,
    pub require_uppercase: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_score: 2,
            require_uppercase: false,
            require_digit: false,
            require_symbol: false,
        }
    }
}

impl PasswordPolicy {
    /// What the policy asks for beyond the length, for a form's hint: `""`, or
    /// `", with an upper-case letter and a digit"`, then always that it must be hard to guess.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = [
            (self.require_uppercase, "an upper-case letter"),
            (self.require_digit, "a digit"),
            (self.require_symbol, "a symbol"),
        ]
        .into_iter()
        .filter_map(|(required, what)| required.then_some(what))
        .collect();
        let with = match kinds.as_slice() {
            [] => String::new(),
            [one] => format!(", with {one}"),
            [init @ .., last] => format!(", with {} and {last}", init.join(", ")),
        };
        let guess = if self.min_score == 0 { "" } else { ", not easy to guess" };
        format!("{with}{guess}")
    }

    /// Refuses a password that breaks the policy, saying why (never echoing it).
    pub fn check(&self, password: &Password, field: &'static str, user_inputs: &[&str]) -> Result<(), Error> {
        let text = password.expose();
        let missing = [
            (
                self.require_uppercase && !text.chars().any(char::is_uppercase),
                "an upper-case letter",
            ),
            (
                self.require_digit && !text.chars().any(|c| c.is_ascii_digit()),
                "a digit",
            ),
            (
                self.require_symbol && text.chars().all(char::is_alphanumeric),
                "a symbol",
            ),
        ];
        if let Some((_, what)) = missing.iter().find(|(lacks, _)| *lacks) {
            return Err(Error::invalid(field, format!("must contain {what}")));
        }
        let inputs: Vec<&str> = user_inputs.iter().copied().filter(|s| !s.is_empty()).collect();
        let estimate = zxcvbn::zxcvbn(text, &inputs);
        if u8::from(estimate.score()) < self.min_score {
            let reason = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| w.to_string())
                .unwrap_or_else(|| "it is too easy to guess".to_string());
            return Err(Error::invalid(
                field,
                format!("is too weak: {}", reason.trim_end_matches('.')),
            ));
        }
        Ok(())
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

    #[test]
    fn common_and_personal_passwords_are_refused() {
        let policy = PasswordPolicy::default();
        let check =
            |p: &str, inputs: &[&str]| policy.check(&Password::parse(p, "password").unwrap(), "password", inputs);
        let err = check("password123", &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { field: "password", .. }));
        assert!(!err.to_string().contains("password123"));
        assert!(check("qwertyuiop", &[]).is_err());
        assert!(check("correct horse battery", &[]).is_ok());
        assert!(
            check(
                "alice.smith.1990",
                &["alice.smith.1990@example.com", "alice.smith.1990"]
            )
            .is_err()
        );
        let strict = PasswordPolicy {
            require_uppercase: true,
            require_digit: true,
            require_symbol: true,
            ..PasswordPolicy::default()
        };
        let refused = strict
            .check(&Password::parse("correct horse battery", "p").unwrap(), "p", &[])
            .unwrap_err();
        assert!(refused.to_string().contains("upper-case"));
        assert!(
            strict
                .check(&Password::parse("Correct horse battery 7!", "p").unwrap(), "p", &[])
                .is_ok()
        );
    }
}
