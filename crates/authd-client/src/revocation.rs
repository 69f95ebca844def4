//! Revocations and the in-process view of them that every verification consults: the answer to
//! "is this credential revoked?" without I/O.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::RwLock;
use uuid::Uuid;

use crate::verify::AccessClaims;

/// What a revocation applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// One session: every access token whose `sid` is the subject.
    Session,
    /// One user: every token of the subject issued at or before `created_at`.
    User,
    /// One API key.
    ApiKey,
    /// One access token, by `jti`.
    Token,
    /// Not a revocation: an API key got a new secret, so cached copies must be dropped. Recorded
    /// like one so that every replica learns of it, through the feed or from Postgres.
    SecretRotated,
}

impl RevocationKind {
    /// The stored name: `session`, `user`, `api_key`, `token` or `api_key_rotated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Token => "token",
            Self::SecretRotated => "api_key_rotated",
        }
    }

    /// The kind stored under `text` (a name [`RevocationKind::as_str`] returns); `None` for any other.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "session" => Some(Self::Session),
            "user" => Some(Self::User),
            "api_key" => Some(Self::ApiKey),
            "token" => Some(Self::Token),
            "api_key_rotated" => Some(Self::SecretRotated),
            _ => None,
        }
    }
}

/// One revocation, as stored and as applied to the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// What is revoked.
    pub kind: RevocationKind,
    /// The revoked session, user or API key id, or token `jti`, as text.
    pub subject_id: String,
    /// The user the revoked credential belongs to, when known (the view does not keep it).
    pub user_id: Option<Uuid>,
    /// When the revocation was made; a user revocation covers tokens issued before it.
    pub created_at: DateTime<Utc>,
    /// After this instant every credential the revocation concerns has expired by itself.
    pub expires_at: DateTime<Utc>,
}

/// The live revocations held in memory: the answer to "is this credential revoked?" without I/O.
/// Entries leave the view once every credential they concern has expired.
#[derive(Debug, Default)]
pub struct RevocationView {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Kind → subject → (when it was revoked, until when the entry matters). Nested by kind so
    /// that a look-up borrows the subject instead of building a key.
    entries: HashMap<RevocationKind, HashMap<String, Span>>,
}

/// When a subject was revoked, and until when its entry matters.
type Span = (DateTime<Utc>, DateTime<Utc>);

impl Inner {
    fn get(&self, kind: RevocationKind, subject: &str) -> Option<&Span> {
        self.entries.get(&kind)?.get(subject)
    }
}

impl RevocationView {
    /// Records a revocation; returns whether it told the view something new (a new subject, or
    /// a later revocation of one already held).
    pub fn apply(&self, revocation: &Revocation) -> bool {
        let mut inner = self.inner.write().expect("revocation view lock");
        let subjects = inner.entries.entry(revocation.kind).or_default();
        match subjects.get_mut(&revocation.subject_id) {
            Some(entry) => {
                let newer = revocation.created_at > entry.0;
                entry.0 = entry.0.max(revocation.created_at);
                entry.1 = entry.1.max(revocation.expires_at);
                newer
            }
            None => {
                subjects.insert(
                    revocation.subject_id.clone(),
                    (revocation.created_at, revocation.expires_at),
                );
                true
            }
        }
    }

    /// Records each revocation, as [`RevocationView::apply`] does.
    pub fn apply_all<'a>(&self, revocations: impl IntoIterator<Item = &'a Revocation>) {
        for revocation in revocations {
            self.apply(revocation);
        }
    }

    /// Whether an access token (already verified) has been revoked by session, token id or user.
    /// A user revocation covers tokens issued in earlier seconds (`iat` has whole seconds only);
    /// tokens of that same second are covered by the revocation of the user's sessions, which
    /// every user revocation also performs, so a login right after it is not caught.
    pub fn is_access_token_revoked(&self, claims: &AccessClaims) -> bool {
        self.is_token_revoked(&claims.sid, &claims.jti, &claims.sub, claims.iat)
    }

    /// [`RevocationView::is_access_token_revoked`] for a token known by its session, id, user
    /// and issue time (seconds) only, e.g. from an introspection answer.
    pub fn is_token_revoked(&self, sid: &str, jti: &str, sub: &str, iat: i64) -> bool {
        let inner = self.inner.read().expect("revocation view lock");
        if inner.get(RevocationKind::Session, sid).is_some() || inner.get(RevocationKind::Token, jti).is_some() {
            return true;
        }
        inner
            .get(RevocationKind::User, sub)
            .is_some_and(|(revoked_at, _)| iat < revoked_at.timestamp())
    }

    /// Whether an API key has been revoked, by its id or by a revocation of its owner made after
    /// the key was created.
    pub fn is_api_key_revoked(&self, key_id: Uuid, owner: Uuid, created_at: DateTime<Utc>) -> bool {
        let inner = self.inner.read().expect("revocation view lock");
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut owner_id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        inner
            .get(RevocationKind::ApiKey, key_id.hyphenated().encode_lower(&mut id))
            .is_some()
            || inner
                .get(RevocationKind::User, owner.hyphenated().encode_lower(&mut owner_id))
                .is_some_and(|(revoked_at, _)| created_at < *revoked_at)
    }

    /// Every revocation held that still matters at `now` (the `user_id` of each is not kept, so
    /// it is `None`), for a watcher's snapshot. Cache-invalidation entries
    /// ([`RevocationKind::SecretRotated`]) are left out: they revoke nothing.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Vec<Revocation> {
        let inner = self.inner.read().expect("revocation view lock");
        inner
            .entries
            .iter()
            .filter(|(kind, _)| **kind != RevocationKind::SecretRotated)
            .flat_map(|(kind, subjects)| {
                subjects.iter().filter(|(_, (_, expires_at))| *expires_at > now).map(
                    |(subject, (created_at, expires_at))| Revocation {
                        kind: *kind,
                        subject_id: subject.clone(),
                        user_id: None,
                        created_at: *created_at,
                        expires_at: *expires_at,
                    },
                )
            })
            .collect()
    }

    /// Forgets entries whose credentials have all expired.
    pub fn prune(&self, now: DateTime<Utc>) {
        let mut inner = self.inner.write().expect("revocation view lock");
        for subjects in inner.entries.values_mut() {
            subjects.retain(|_, (_, expires_at)| *expires_at > now);
        }
    }

    /// Number of entries held, of every kind.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().expect("revocation view lock");
        inner.entries.values().map(HashMap::len).sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn claims(sid: &str, jti: &str, sub: &str, iat: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: sub.into(),
            aud: vec!["a".into()],
            exp: iat + 900,
            iat,
            nbf: iat,
            jti: jti.into(),
            sid: sid.into(),
            scope: String::new(),
            roles: vec![],
            client_id: "authd".into(),
            username: "u".into(),
        }
    }

    fn revocation(kind: RevocationKind, subject: &str, at: DateTime<Utc>) -> Revocation {
        Revocation {
            kind,
            subject_id: subject.into(),
            user_id: None,
            created_at: at,
            expires_at: at + Duration::minutes(16),
        }
    }

    #[test]
    fn sessions_tokens_and_users() {
        let now = Utc::now();
        let view = RevocationView::default();
        let token = claims("s1", "j1", "u1", now.timestamp() - 5);
        assert!(!view.is_access_token_revoked(&token));
        view.apply(&revocation(RevocationKind::Session, "s1", now));
        assert!(view.is_access_token_revoked(&token));
        assert!(!view.is_access_token_revoked(&claims("s2", "j2", "u1", now.timestamp())));
        view.apply(&revocation(RevocationKind::Token, "j2", now));
        assert!(view.is_access_token_revoked(&claims("s2", "j2", "u1", now.timestamp())));
        view.apply(&revocation(RevocationKind::User, "u3", now));
        assert!(view.is_access_token_revoked(&claims("s3", "j3", "u3", now.timestamp() - 1)));
        assert!(!view.is_access_token_revoked(&claims("s3", "j3", "u3", now.timestamp())));
        assert!(!view.is_access_token_revoked(&claims("s3", "j3", "u3", now.timestamp() + 1)));
        let owner = uuid::Uuid::now_v7();
        view.apply(&revocation(RevocationKind::User, &owner.to_string(), now));
        let key = uuid::Uuid::now_v7();
        assert!(view.is_api_key_revoked(key, owner, now - Duration::milliseconds(1)));
        assert!(!view.is_api_key_revoked(key, owner, now + Duration::milliseconds(1)));
        view.prune(now + Duration::minutes(17));
        assert!(view.is_empty());
    }
}
