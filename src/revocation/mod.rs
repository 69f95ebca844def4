//! Revocations: written to Postgres (the record) and applied to an in-process view that the hot
//! path consults without any I/O.

pub(crate) mod feed;
mod revoker;
pub mod watchers;

pub use authd_client::revocation::{Revocation, RevocationKind, RevocationView};
pub use feed::{Feed, FeedMessage};
pub use revoker::{ForgetsRevoked, Revoker};
pub use watchers::Watchers;

use crate::store::revocations::{NewRevocation, RevocationRow};

/// How a revocation is stored: the row it is written as, and read back from.
pub trait StoredRevocation: Sized {
    fn to_row(&self) -> NewRevocation<'static>;
    fn from_row(row: &RevocationRow) -> Option<Self>;
}

impl StoredRevocation for Revocation {
    fn to_row(&self) -> NewRevocation<'static> {
        NewRevocation {
            kind: self.kind.as_str(),
            subject_id: self.subject_id.clone(),
            user_id: self.user_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }

    fn from_row(row: &RevocationRow) -> Option<Self> {
        Some(Self {
            kind: RevocationKind::parse(&row.kind)?,
            subject_id: row.subject_id.clone(),
            user_id: row.user_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}
