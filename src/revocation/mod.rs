//! Revocations: written to Postgres (the record) and applied to an in-process view that the hot
//! path consults without any I/O.

pub mod feed;
mod view;

pub use feed::{Feed, FeedMessage};
pub use view::RevocationView;

use crate::store::revocations::{NewRevocation, RevocationRow};
use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Token => "token",
            Self::SecretRotated => "api_key_rotated",
        }
    }

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
    pub kind: RevocationKind,
    pub subject_id: String,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// After this instant every credential the revocation concerns has expired by itself.
    pub expires_at: DateTime<Utc>,
}

impl Revocation {
    pub fn to_row(&self) -> NewRevocation<'static> {
        NewRevocation {
            kind: self.kind.as_str(),
            subject_id: self.subject_id.clone(),
            user_id: self.user_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }

    pub fn from_row(row: &RevocationRow) -> Option<Self> {
        Some(Self {
            kind: RevocationKind::parse(&row.kind)?,
            subject_id: row.subject_id.clone(),
            user_id: row.user_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}
