//! Identities at OpenID providers, linked to accounts.

use super::schema::{identity_unlinks, user_identities};
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_identities, check_for_backend(diesel::pg::Pg))]
pub struct IdentityRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// The identity `subject` of `issuer`, if linked.
pub async fn find(conn: &mut Conn<'_>, issuer: &str, subject: &str) -> StoreResult<Option<IdentityRow>> {
    Ok(user_identities::table
        .filter(user_identities::issuer.eq(issuer))
        .filter(user_identities::subject.eq(subject))
        .select(IdentityRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Links an identity; a second identity of the same issuer and subject, or a second one of the
/// same provider for the user, is a conflict.
pub async fn insert(conn: &mut Conn<'_>, row: &IdentityRow) -> StoreResult<()> {
    diesel::insert_into(user_identities::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a sign-in through an identity, with the address the provider holds now.
pub async fn record_login(conn: &mut Conn<'_>, id: Uuid, email: Option<&str>, at: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(user_identities::table.find(id))
        .set((user_identities::last_login_at.eq(at), user_identities::email.eq(email)))
        .execute(conn)
        .await?;
    Ok(())
}

/// The providers each of these users has linked, by name.
pub async fn providers_of(
    conn: &mut Conn<'_>,
    users: &[Uuid],
) -> StoreResult<std::collections::HashMap<Uuid, Vec<String>>> {
    let rows: Vec<(Uuid, String)> = user_identities::table
        .filter(user_identities::user_id.eq_any(users))
        .order((user_identities::user_id, user_identities::provider))
        .select((user_identities::user_id, user_identities::provider))
        .load(conn)
        .await?;
    let mut out: std::collections::HashMap<Uuid, Vec<String>> = std::collections::HashMap::new();
    for (user, provider) in rows {
        out.entry(user).or_default().push(provider);
    }
    Ok(out)
}

/// Unlinks the user's identity at `provider`, and remembers that it was unlinked; whether there
/// was one.
pub async fn delete(conn: &mut Conn<'_>, user_id: Uuid, provider: &str, at: DateTime<Utc>) -> StoreResult<bool> {
    let deleted: Vec<(String, String)> = diesel::delete(
        user_identities::table
            .filter(user_identities::user_id.eq(user_id))
            .filter(user_identities::provider.eq(provider)),
    )
    .returning((user_identities::issuer, user_identities::subject))
    .get_results(conn)
    .await?;
    for (issuer, subject) in &deleted {
        diesel::insert_into(identity_unlinks::table)
            .values((
                identity_unlinks::user_id.eq(user_id),
                identity_unlinks::issuer.eq(issuer),
                identity_unlinks::subject.eq(subject),
                identity_unlinks::unlinked_at.eq(at),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(!deleted.is_empty())
}

/// Whether the user unlinked this identity (so it may come back only through LinkProvider).
pub async fn was_unlinked(conn: &mut Conn<'_>, user_id: Uuid, issuer: &str, subject: &str) -> StoreResult<bool> {
    let found: Option<Uuid> = identity_unlinks::table
        .filter(identity_unlinks::user_id.eq(user_id))
        .filter(identity_unlinks::issuer.eq(issuer))
        .filter(identity_unlinks::subject.eq(subject))
        .select(identity_unlinks::user_id)
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

/// Forgets that the user unlinked this identity (it was linked again on purpose).
pub async fn forget_unlink(conn: &mut Conn<'_>, user_id: Uuid, issuer: &str, subject: &str) -> StoreResult<()> {
    diesel::delete(
        identity_unlinks::table
            .filter(identity_unlinks::user_id.eq(user_id))
            .filter(identity_unlinks::issuer.eq(issuer))
            .filter(identity_unlinks::subject.eq(subject)),
    )
    .execute(conn)
    .await?;
    Ok(())
}
