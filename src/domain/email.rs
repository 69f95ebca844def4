use crate::error::Error;

/// A syntactically valid email address, trimmed. Its [`Email::normalized`] form (lower case) is what
/// uniqueness and look-ups compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    as_given: String,
    normalized: String,
}

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::invalid("email", reason);
        let email = input.trim();
        if email.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if email.len() > Self::MAX_LEN {
            return Err(invalid("is too long"));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(invalid("is not an email address"));
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                    || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
            });
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()))
            });
        if !local_ok || !domain_ok {
            return Err(invalid("is not an email address"));
        }
        Ok(Self {
            as_given: email.to_string(),
            normalized: normalize(email),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.as_given
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// Trims and lower-cases ASCII letters only. Unicode case mapping would merge look-alikes into
/// other accounts (the Kelvin sign `K` lower-cases to `k`, `İ` to `i̇`), so every non-ASCII
/// character is compared exactly as given (security rule 9).
pub(crate) fn normalize(text: &str) -> String {
    text.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        let email = Email::parse("  Alice.Smith+tag@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Alice.Smith+tag@Example.COM");
        assert_eq!(email.normalized(), "alice.smith+tag@example.com");
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "   ",
            "plain",
            "a@b",
            "@example.com",
            "a@.com",
            "a..b@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn case_folding_tricks_do_not_collide() {
        // U+0131 dotless i and U+212A Kelvin sign must not turn into ASCII i / k.
        let dotless = Email::parse("\u{131}van@example.com").unwrap();
        assert_ne!(dotless.normalized(), "ivan@example.com");
        let kelvin = Email::parse("\u{212a}ate@example.com").unwrap();
        assert_ne!(
            kelvin.normalized(),
            Email::parse("kate@example.com").unwrap().normalized()
        );
    }

    /// Local parts and domains drawn from ASCII letters and digits, a few symbols, and
    /// characters whose Unicode lower case is ASCII (the Kelvin sign, dotted capital I).
    fn address() -> impl proptest::strategy::Strategy<Value = String> {
        let local = "[a-zA-Z0-9+_\u{212a}\u{130}\u{131}]{1,12}";
        let domain = "[a-zA-Z0-9\u{212a}]{1,10}\\.[a-zA-Z]{2,4}";
        (local, domain, " {0,2}").prop_map(|(l, d, pad)| format!("{pad}{l}@{d}{pad}"))
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Normalising twice changes nothing, and two addresses share a normal form only when
        /// they differ in ASCII case and surrounding space alone: never through Unicode folding.
        #[test]
        fn normalisation_is_idempotent_and_never_merges(a in address(), b in address()) {
            let (Ok(x), Ok(y)) = (Email::parse(&a), Email::parse(&b)) else {
                return Ok(());
            };
            let again = Email::parse(x.normalized()).unwrap();
            proptest::prop_assert_eq!(again.normalized(), x.normalized());
            if x.normalized() == y.normalized() {
                proptest::prop_assert!(x.as_str().eq_ignore_ascii_case(y.as_str()), "{a:?} merged with {b:?}");
            }
            // The same address with its ASCII letters in another case is the same account.
            let swapped: String = a.chars().map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect();
            let swapped = Email::parse(&swapped).unwrap();
            proptest::prop_assert_eq!(swapped.normalized(), x.normalized());
        }
    }
}
