//! Mail requests that name an address, kept from the answer until a replica has handled them.

use super::schema::mail_requests;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = mail_requests, check_for_backend(diesel::pg::Pg))]
pub struct MailRequestRow {
    pub kind: String,
    pub email: String,
}

pub async fn insert(conn: &mut Conn<'_>, kind: &str, email: &str, now: DateTime<Utc>) -> StoreResult<i64> {
    Ok(diesel::insert_into(mail_requests::table)
        .values((
            mail_requests::kind.eq(kind),
            mail_requests::email.eq(email),
            mail_requests::requested_at.eq(now),
        ))
        .returning(mail_requests::id)
        .get_result(conn)
        .await?)
}

/// Takes request `id`, in the caller's transaction: it is gone once that commits, and back for
/// another worker if it rolls back. `None` when it is already handled or another worker holds it.
pub async fn take(conn: &mut Conn<'_>, id: i64) -> StoreResult<Option<MailRequestRow>> {
    let Some(row) = mail_requests::table
        .find(id)
        .select(MailRequestRow::as_select())
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    diesel::delete(mail_requests::table.find(id)).execute(conn).await?;
    Ok(Some(row))
}

/// The oldest requests of these kinds made before `before`, with ids above `after_id`, that no
/// worker holds now: left by a replica that stopped (or was killed) before handling them.
pub async fn left_over(
    conn: &mut Conn<'_>,
    kinds: &[&str],
    before: DateTime<Utc>,
    after_id: i64,
    limit: i64,
) -> StoreResult<Vec<i64>> {
    use diesel_async::AsyncConnection;
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            mail_requests::table
                .filter(mail_requests::requested_at.lt(before))
                .filter(mail_requests::id.gt(after_id))
                .filter(mail_requests::kind.eq_any(kinds))
                .order(mail_requests::id.asc())
                .limit(limit)
                .select(mail_requests::id)
                .for_update()
                .skip_locked()
                .load(conn)
                .await
        })
        .await?)
}
