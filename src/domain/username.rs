use crate::error::Error;

/// 3 to 32 characters: ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit, and
/// never shaped like an email address (so a login identifier is unambiguous).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let name = input.trim();
        let invalid = |reason: &str| Error::invalid("username", reason);
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.len() < 3 || name.len() > 32 {
            return Err(invalid("must be 3 to 32 characters long"));
        }
        if !name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("must start with a letter or a digit"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid("may contain only letters, digits, '.', '_' and '-'"));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(Username::parse(" Alice_1 ").unwrap().normalized(), "alice_1");
        for bad in [
            "",
            "ab",
            "_alice",
            "al ice",
            "alice@example.com",
            &"x".repeat(33),
            "zoë",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
