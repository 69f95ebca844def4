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
///
/// An entry whose subject is an id (a UUID, as sessions, users and API keys have) is kept in 32
/// bytes: the id's 16 and two instants of 8 (microseconds, as Postgres keeps them, rounded up). Any other
/// subject (a token's `jti`) is kept as text.
#[derive(Debug, Default)]
pub struct RevocationView {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Kind → subject → when it was revoked and until when the entry matters. Nested by kind so
    /// that a look-up borrows the subject instead of building a key.
    entries: HashMap<RevocationKind, Subjects>,
}

/// The subjects of one kind.
#[derive(Debug, Default)]
struct Subjects {
    /// Subjects written as a UUID in its canonical form (hyphenated, lower case), by value.
    ids: HashMap<u128, Span>,
    /// Any other subject, as text.
    names: HashMap<Box<str>, Span>,
}

/// When a subject was revoked, and until when its entry matters, in microseconds since the epoch.
#[derive(Clone, Copy, Debug)]
struct Span {
    revoked_at: i64,
    until: i64,
}

impl Span {
    /// Both instants rounded up to the microsecond: a revocation then covers at least what it
    /// covered to the nanosecond (a credential made in its microsecond, before it, included).
    fn new(revocation: &Revocation) -> Self {
        Self {
            revoked_at: micros_up(revocation.created_at),
            until: micros_up(revocation.expires_at),
        }
    }

    /// Takes in a later revocation of the same subject; returns whether it was later.
    fn merge(&mut self, other: Span) -> bool {
        let newer = other.revoked_at > self.revoked_at;
        self.revoked_at = self.revoked_at.max(other.revoked_at);
        self.until = self.until.max(other.until);
        newer
    }

    fn revoked_at(self) -> DateTime<Utc> {
        micros(self.revoked_at)
    }
}

fn micros_up(at: DateTime<Utc>) -> i64 {
    let micros = at.timestamp_micros();
    if at.timestamp_subsec_nanos().is_multiple_of(1000) {
        micros
    } else {
        micros.saturating_add(1)
    }
}

fn micros(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(value).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `subject` as an id, when it is a UUID written canonically (so that it is written back the same).
fn id_of(subject: &str) -> Option<u128> {
    if subject.len() != uuid::fmt::Hyphenated::LENGTH || subject.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Uuid::try_parse(subject).ok().map(|id| id.as_u128())
}

impl Subjects {
    fn get(&self, subject: &str) -> Option<Span> {
        match id_of(subject) {
            Some(id) => self.ids.get(&id).copied(),
            None => self.names.get(subject).copied(),
        }
    }

    /// Records `span` for `subject`; returns whether it told something new.
    fn apply(&mut self, subject: &str, span: Span) -> bool {
        let existing = match id_of(subject) {
            Some(id) => match self.ids.get_mut(&id) {
                Some(existing) => existing,
                None => {
                    self.ids.insert(id, span);
                    return true;
                }
            },
            None => match self.names.get_mut(subject) {
                Some(existing) => existing,
                None => {
                    self.names.insert(subject.into(), span);
                    return true;
                }
            },
        };
        existing.merge(span)
    }

    fn retain_live(&mut self, now: i64) {
        self.ids.retain(|_, span| span.until > now);
        self.names.retain(|_, span| span.until > now);
    }

    fn len(&self) -> usize {
        self.ids.len() + self.names.len()
    }
}

/// The live revocations of a view at one instant ([`RevocationView::snapshot`]), about 48 bytes
/// each.
#[derive(Debug)]
pub struct Snapshot {
    entries: Vec<(RevocationKind, Copied, Span)>,
}

/// A subject as the snapshot holds it (an id as bytes: no 16-byte alignment to pad for).
#[derive(Debug)]
enum Copied {
    Id([u8; 16]),
    Name(Box<str>),
}

impl Snapshot {
    /// How many revocations it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The revocations, each made as it is asked for.
    pub fn iter(&self) -> impl Iterator<Item = Revocation> + '_ {
        self.entries.iter().map(|(kind, subject, span)| Revocation {
            kind: *kind,
            subject_id: match subject {
                Copied::Id(bytes) => Uuid::from_bytes(*bytes).to_string(),
                Copied::Name(name) => name.to_string(),
            },
            user_id: None,
            created_at: span.revoked_at(),
            expires_at: micros(span.until),
        })
    }
}

impl Inner {
    fn get(&self, kind: RevocationKind, subject: &str) -> Option<Span> {
        self.entries.get(&kind)?.get(subject)
    }

    fn get_id(&self, kind: RevocationKind, id: Uuid) -> Option<Span> {
        self.entries.get(&kind)?.ids.get(&id.as_u128()).copied()
    }

    fn apply(&mut self, revocation: &Revocation) -> bool {
        self.entries
            .entry(revocation.kind)
            .or_default()
            .apply(&revocation.subject_id, Span::new(revocation))
    }
}

impl RevocationView {
    /// Records a revocation; returns whether it told the view something new (a new subject, or
    /// a later revocation of one already held).
    pub fn apply(&self, revocation: &Revocation) -> bool {
        self.inner.write().expect("revocation view lock").apply(revocation)
    }

    /// Makes room for `additional` more entries of `kind` (before a load of known size). Token
    /// ids (`jti`) are text; every other kind's subjects are ids.
    pub fn reserve(&self, kind: RevocationKind, additional: usize) {
        let mut inner = self.inner.write().expect("revocation view lock");
        let subjects = inner.entries.entry(kind).or_default();
        match kind {
            RevocationKind::Token => subjects.names.reserve(additional),
            _ => subjects.ids.reserve(additional),
        }
    }

    /// Records each revocation, as [`RevocationView::apply`] does.
    pub fn apply_all<'a>(&self, revocations: impl IntoIterator<Item = &'a Revocation>) {
        let mut inner = self.inner.write().expect("revocation view lock");
        for revocation in revocations {
            inner.apply(revocation);
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
            .is_some_and(|span| iat < span.revoked_at().timestamp())
    }

    /// Whether an API key has been revoked, by its id or by a revocation of its owner made after
    /// the key was created.
    pub fn is_api_key_revoked(&self, key_id: Uuid, owner: Uuid, created_at: DateTime<Utc>) -> bool {
        let inner = self.inner.read().expect("revocation view lock");
        inner.get_id(RevocationKind::ApiKey, key_id).is_some()
            || inner
                .get_id(RevocationKind::User, owner)
                .is_some_and(|span| created_at.timestamp_micros() < span.revoked_at)
    }

    /// Every revocation held that still matters at `now` (the `user_id` of each is not kept, so
    /// it is `None`), for a watcher's snapshot: a compact copy taken at once, turned into
    /// revocations one at a time as they are sent. Cache-invalidation entries
    /// ([`RevocationKind::SecretRotated`]) are left out: they revoke nothing.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let now = now.timestamp_micros();
        let inner = self.inner.read().expect("revocation view lock");
        let mut entries = Vec::with_capacity(inner.entries.values().map(Subjects::len).sum());
        for (kind, subjects) in inner
            .entries
            .iter()
            .filter(|(kind, _)| **kind != RevocationKind::SecretRotated)
        {
            let ids = subjects
                .ids
                .iter()
                .map(|(id, span)| (Copied::Id(id.to_be_bytes()), *span));
            let names = subjects
                .names
                .iter()
                .map(|(name, span)| (Copied::Name(name.clone()), *span));
            entries.extend(
                ids.chain(names)
                    .filter(|(_, span)| span.until > now)
                    .map(|(subject, span)| (*kind, subject, span)),
            );
        }
        Snapshot { entries }
    }

    /// Forgets entries whose credentials have all expired.
    pub fn prune(&self, now: DateTime<Utc>) {
        let now = now.timestamp_micros();
        let mut inner = self.inner.write().expect("revocation view lock");
        for subjects in inner.entries.values_mut() {
            subjects.retain_live(now);
        }
    }

    /// Number of entries held, of every kind.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().expect("revocation view lock");
        inner.entries.values().map(Subjects::len).sum()
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

    #[test]
    fn subjects_come_back_as_they_were_written() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("instant");
        let id = uuid::Uuid::now_v7().to_string();
        let upper = uuid::Uuid::now_v7().to_string().to_uppercase();
        let view = RevocationView::default();
        for (kind, subject) in [
            (RevocationKind::Session, id.as_str()),
            (RevocationKind::User, upper.as_str()),
            (RevocationKind::Token, "dGhpcyBpcyBub3QgYSB1dWlk"),
        ] {
            assert!(view.apply(&revocation(kind, subject, at)));
            assert!(
                !view.apply(&revocation(kind, subject, at - Duration::seconds(1))),
                "an earlier revocation tells nothing new"
            );
            assert!(
                view.apply(&revocation(kind, subject, at + Duration::microseconds(1))),
                "a later one does"
            );
        }
        let mut snapshot: Vec<Revocation> = view.snapshot(at).iter().collect();
        snapshot.sort_by(|a, b| a.subject_id.cmp(&b.subject_id));
        let mut expected = vec![
            revocation(RevocationKind::Session, &id, at + Duration::microseconds(1)),
            revocation(RevocationKind::User, &upper, at + Duration::microseconds(1)),
            revocation(
                RevocationKind::Token,
                "dGhpcyBpcyBub3QgYSB1dWlk",
                at + Duration::microseconds(1),
            ),
        ];
        expected.sort_by(|a, b| a.subject_id.cmp(&b.subject_id));
        assert_eq!(snapshot, expected);
        // An id written in capitals is another subject than the same id in lower case.
        assert!(!view.is_token_revoked("s", "j", &upper.to_lowercase(), 0));
        assert!(view.is_token_revoked("s", "j", &upper, 0));
        assert_eq!(view.len(), 3);
    }

    #[test]
    fn a_revocation_covers_a_key_made_earlier_in_its_microsecond() {
        let at = DateTime::from_timestamp(1_780_000_000, 500_700).expect("instant");
        let view = RevocationView::default();
        let owner = uuid::Uuid::now_v7();
        view.apply(&revocation(RevocationKind::User, &owner.to_string(), at));
        let key = uuid::Uuid::now_v7();
        let earlier_same_micro = DateTime::from_timestamp(1_780_000_000, 500_300).expect("instant");
        assert!(view.is_api_key_revoked(key, owner, earlier_same_micro));
        assert!(!view.is_api_key_revoked(key, owner, at + Duration::microseconds(1)));
    }
}
