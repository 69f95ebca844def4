use super::schema::{refresh_tokens, sessions};
use super::{Cached, Conn, Shared, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub device_name: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshToken<'a> {
    pub token_hash: &'a [u8],
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(mut conn: Shared<'_>, session: &SessionRow) -> StoreResult<()> {
    Cached(diesel::insert_into(sessions::table).values(session))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn insert_refresh_token(mut conn: Shared<'_>, token: &NewRefreshToken<'_>) -> StoreResult<()> {
    Cached(diesel::insert_into(refresh_tokens::table).values(token))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Marks an unused, unexpired refresh token as used, in one statement: of many concurrent calls
/// with the same token exactly one gets its session id back.
pub async fn consume_refresh_token(conn: &mut Conn<'_>, hash: &[u8], now: DateTime<Utc>) -> StoreResult<Option<Uuid>> {
    Ok(Cached(
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::token_hash.eq(hash))
                .filter(refresh_tokens::used_at.is_null())
                .filter(refresh_tokens::expires_at.gt(now)),
        )
        .set(refresh_tokens::used_at.eq(now))
        .returning(refresh_tokens::session_id),
    )
    .get_result(conn)
    .await
    .optional()?)
}

/// The session of a refresh token, used or not.
pub async fn session_of_refresh_token(conn: &mut Conn<'_>, hash: &[u8]) -> StoreResult<Option<Uuid>> {
    Ok(refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(refresh_tokens::session_id)
        .first(conn)
        .await
        .optional()?)
}

pub async fn find(conn: &mut Conn<'_>, id: Uuid) -> StoreResult<Option<SessionRow>> {
    Ok(sessions::table
        .find(id)
        .select(SessionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn touch(conn: &mut Conn<'_>, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
    Cached(diesel::update(sessions::table.find(id)).set(sessions::last_used_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(())
}

/// The user's sessions that are neither revoked nor expired, oldest first.
pub async fn live_for_user(conn: &mut Conn<'_>, user_id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<SessionRow>> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .order(sessions::created_at.asc())
        .select(SessionRow::as_select())
        .load(conn)
        .await?)
}

/// Revokes one live session; returns whether it was live.
pub async fn revoke(conn: &mut Conn<'_>, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    let n = diesel::update(sessions::table.find(id).filter(sessions::revoked_at.is_null()))
        .set(sessions::revoked_at.eq(now))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Revokes the oldest live sessions of a user but `keep`, as many as it takes to leave `max`
/// live sessions with `keep`, in one statement; returns the ids revoked.
pub async fn revoke_beyond(
    mut conn: Shared<'_>,
    user_id: Uuid,
    keep: Uuid,
    max: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
    #[derive(diesel::QueryableByName)]
    struct Revoked {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let revoked: Vec<Revoked> = Cached(
        diesel::sql_query(
            "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND user_id = $2 AND id IN ( \
           SELECT id FROM ( \
             SELECT id, row_number() OVER (ORDER BY created_at, id) AS n, count(*) OVER () AS others \
             FROM sessions \
             WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 AND id <> $3 \
           ) live WHERE n <= others + 1 - $4 \
         ) RETURNING id",
        )
        .bind::<Timestamptz, _>(now)
        .bind::<SqlUuid, _>(user_id)
        .bind::<SqlUuid, _>(keep)
        .bind::<BigInt, _>(i64::from(max)),
    )
    .load(&mut conn)
    .await?;
    Ok(revoked.into_iter().map(|r| r.id).collect())
}

/// Revokes every live session of a user but `keep`; returns the ids revoked.
pub async fn revoke_all_for_user(
    mut conn: Shared<'_>,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    let keep = keep.unwrap_or(Uuid::nil());
    Ok(diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .filter(sessions::id.ne(keep)),
    )
    .set(sessions::revoked_at.eq(now))
    .returning(sessions::id)
    .get_results(&mut conn)
    .await?)
}

/// Deletes sessions (and their refresh tokens) that expired or were revoked before `before`.
pub async fn purge_finished(conn: &mut Conn<'_>, before: DateTime<Utc>) -> StoreResult<usize> {
    Ok(
        diesel::delete(sessions::table.filter(sessions::expires_at.lt(before).or(sessions::revoked_at.lt(before))))
            .execute(conn)
            .await?,
    )
}
