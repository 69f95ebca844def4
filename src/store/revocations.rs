use super::schema::revocations;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = revocations, check_for_backend(diesel::pg::Pg))]
pub struct RevocationRow {
    pub id: i64,
    pub kind: String,
    pub subject_id: String,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = revocations)]
pub struct NewRevocation<'a> {
    pub kind: &'a str,
    pub subject_id: String,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_many(conn: &mut Conn<'_>, rows: &[NewRevocation<'_>]) -> StoreResult<()> {
    if !rows.is_empty() {
        diesel::insert_into(revocations::table)
            .values(rows)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Revocations that still matter at `now`.
pub async fn live(conn: &mut Conn<'_>, now: DateTime<Utc>) -> StoreResult<Vec<RevocationRow>> {
    Ok(revocations::table
        .filter(revocations::expires_at.gt(now))
        .order(revocations::id.asc())
        .select(RevocationRow::as_select())
        .load(conn)
        .await?)
}
