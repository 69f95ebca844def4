use super::schema::one_time_tokens;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = one_time_tokens, check_for_backend(diesel::pg::Pg))]
pub struct OneTimeTokenRow {
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub purpose: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Inserts a token after retiring the user's unused tokens of the same purpose: the newest
/// request supersedes the older ones.
pub async fn replace(conn: &mut Conn<'_>, token: &OneTimeTokenRow) -> StoreResult<()> {
    diesel::update(
        one_time_tokens::table
            .filter(one_time_tokens::user_id.eq(token.user_id))
            .filter(one_time_tokens::purpose.eq(&token.purpose))
            .filter(one_time_tokens::used_at.is_null()),
    )
    .set(one_time_tokens::used_at.eq(token.created_at))
    .execute(conn)
    .await?;
    diesel::insert_into(one_time_tokens::table)
        .values(token)
        .execute(conn)
        .await?;
    Ok(())
}

/// Spends a live token of this purpose, in one statement: of concurrent uses exactly one wins.
pub async fn consume(
    conn: &mut Conn<'_>,
    hash: &[u8],
    purpose: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<OneTimeTokenRow>> {
    Ok(diesel::update(
        one_time_tokens::table
            .filter(one_time_tokens::token_hash.eq(hash))
            .filter(one_time_tokens::purpose.eq(purpose))
            .filter(one_time_tokens::used_at.is_null())
            .filter(one_time_tokens::expires_at.gt(now)),
    )
    .set(one_time_tokens::used_at.eq(now))
    .returning(OneTimeTokenRow::as_returning())
    .get_result(conn)
    .await
    .optional()?)
}

/// A live token of this purpose (unused and unexpired), without spending it.
pub async fn find_live(
    conn: &mut Conn<'_>,
    hash: &[u8],
    purpose: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<OneTimeTokenRow>> {
    Ok(one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(hash))
        .filter(one_time_tokens::purpose.eq(purpose))
        .filter(one_time_tokens::used_at.is_null())
        .filter(one_time_tokens::expires_at.gt(now))
        .select(OneTimeTokenRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Makes every unused token of the user unusable, whatever its purpose: a pending link must not
/// outlive the credentials that were current when it was mailed.
pub async fn retire_unused(conn: &mut Conn<'_>, user_id: Uuid, now: DateTime<Utc>) -> StoreResult<usize> {
    Ok(diesel::update(
        one_time_tokens::table
            .filter(one_time_tokens::user_id.eq(user_id))
            .filter(one_time_tokens::used_at.is_null()),
    )
    .set((one_time_tokens::used_at.eq(now), one_time_tokens::expires_at.eq(now)))
    .execute(conn)
    .await?)
}

/// A token of this purpose whatever its state (used tokens included).
pub async fn find(conn: &mut Conn<'_>, hash: &[u8], purpose: &str) -> StoreResult<Option<OneTimeTokenRow>> {
    Ok(one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(hash))
        .filter(one_time_tokens::purpose.eq(purpose))
        .select(OneTimeTokenRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Moves a token's expiry (a deletion link stays able to cancel until the purge).
pub async fn extend(conn: &mut Conn<'_>, hash: &[u8], until: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(one_time_tokens::table.find(hash))
        .set(one_time_tokens::expires_at.eq(until))
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes every token of the user with this purpose unusable.
pub async fn retire_all(conn: &mut Conn<'_>, user_id: Uuid, purpose: &str, now: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(
        one_time_tokens::table
            .filter(one_time_tokens::user_id.eq(user_id))
            .filter(one_time_tokens::purpose.eq(purpose)),
    )
    .set((one_time_tokens::used_at.eq(now), one_time_tokens::expires_at.eq(now)))
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes tokens that expired before `before`.
pub async fn purge_expired(conn: &mut Conn<'_>, before: DateTime<Utc>) -> StoreResult<usize> {
    Ok(
        diesel::delete(one_time_tokens::table.filter(one_time_tokens::expires_at.lt(before)))
            .execute(conn)
            .await?,
    )
}
