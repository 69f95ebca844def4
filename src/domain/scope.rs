use crate::error::Error;

/// One permission string such as `tokens:introspect` or `tasks:write`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    pub const INTROSPECT: &'static str = "tokens:introspect";

    pub fn parse(input: &str) -> Result<Self, Error> {
        let s = input.trim();
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '.' | '_' | '-'));
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::invalid(
                "scopes",
                format!(
                    "`{}` is not a scope like `tasks:write`",
                    s.chars().take(64).collect::<String>()
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sorted, de-duplicated set of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut scopes = items.into_iter().map(Scope::parse).collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        if scopes.len() > 64 {
            return Err(Error::invalid("scopes", "at most 64 scopes"));
        }
        Ok(Self(scopes))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(Scope::parse(" tasks:write ").unwrap().as_str(), "tasks:write");
        assert!(Scope::parse("Tasks").is_err());
        assert!(Scope::parse("a b").is_err());
        assert!(
            Scope::parse("*").is_err(),
            "no wildcards: downstream matchers might honour them"
        );
        assert!(Scope::parse("tasks:*").is_err());
        let s = Scopes::parse(["b:x", "a:y", "b:x"]).unwrap();
        assert_eq!(s.to_strings(), vec!["a:y", "b:x"]);
    }
}
