//! The roles a user can hold, carried in access tokens as `roles`.

/// One role. Stored and carried by name; a name authd does not know grants nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Moderator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The roles among `names` authd knows (unknown names are dropped: they grant nothing).
    pub fn known<S: AsRef<str>>(names: &[S]) -> Vec<Role> {
        names.iter().filter_map(|name| Self::parse(name.as_ref())).collect()
    }

    /// Names as they are stored and carried.
    pub fn names(roles: &[Role]) -> Vec<String> {
        roles.iter().map(|r| r.as_str().to_string()).collect()
    }

    /// Every name, for messages (`user, moderator, admin`).
    pub fn listed() -> String {
        Self::ALL.map(Role::as_str).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_unknown_names_grant_nothing() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::known(&["admin", "root", "user"]), [Role::Admin, Role::User]);
        assert_eq!(Role::names(&[Role::User, Role::Admin]), ["user", "admin"]);
    }
}
