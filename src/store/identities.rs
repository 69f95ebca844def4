//! Identities at OpenID providers, linked to accounts.

use super::schema::user_identities;
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

/// Unlinks the user's identity at `provider`; whether there was one.
pub async fn delete(conn: &mut Conn<'_>, user_id: Uuid, provider: &str) -> StoreResult<bool> {
    let deleted = diesel::delete(
        user_identities::table
            .filter(user_identities::user_id.eq(user_id))
            .filter(user_identities::provider.eq(provider)),
    )
    .execute(conn)
    .await?;
    Ok(deleted > 0)
}
