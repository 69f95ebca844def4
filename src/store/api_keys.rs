use super::schema::api_keys;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub label: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub previous_secret_hash: Option<Vec<u8>>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Shows which key, never its hashes.
impl std::fmt::Debug for ApiKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRow")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("user_id", &self.user_id)
            .field("scopes", &self.scopes)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

pub async fn insert(conn: &mut Conn<'_>, key: &ApiKeyRow) -> StoreResult<()> {
    diesel::insert_into(api_keys::table).values(key).execute(conn).await?;
    Ok(())
}

pub async fn find_by_prefix(conn: &mut Conn<'_>, prefix: &str) -> StoreResult<Option<ApiKeyRow>> {
    Ok(api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_for_user(conn: &mut Conn<'_>, id: Uuid, user_id: Uuid) -> StoreResult<Option<ApiKeyRow>> {
    Ok(api_keys::table
        .find(id)
        .filter(api_keys::user_id.eq(user_id))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn list_for_user(conn: &mut Conn<'_>, user_id: Uuid) -> StoreResult<Vec<ApiKeyRow>> {
    Ok(api_keys::table
        .filter(api_keys::user_id.eq(user_id))
        .order(api_keys::created_at.asc())
        .select(ApiKeyRow::as_select())
        .load(conn)
        .await?)
}

/// Revokes a key of this user; returns the row when it was not revoked before.
pub async fn revoke(
    conn: &mut Conn<'_>,
    id: Uuid,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<ApiKeyRow>> {
    Ok(diesel::update(
        api_keys::table
            .find(id)
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(now))
    .returning(ApiKeyRow::as_returning())
    .get_result(conn)
    .await
    .optional()?)
}

/// Revokes every key of a user not revoked yet (the user-wide path); returns their ids.
pub async fn revoke_all_for_user(conn: &mut Conn<'_>, user_id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
    Ok(diesel::update(
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(now))
    .returning(api_keys::id)
    .get_results(conn)
    .await?)
}

/// Replaces the secret of a live key, keeping the old one valid until `previous_expires_at`.
pub async fn rotate(
    conn: &mut Conn<'_>,
    id: Uuid,
    user_id: Uuid,
    new_hash: &[u8],
    previous_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ApiKeyRow>> {
    Ok(diesel::update(
        api_keys::table
            .find(id)
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(now))),
    )
    .set((
        api_keys::previous_secret_hash.eq(api_keys::secret_hash.nullable()),
        api_keys::previous_expires_at.eq(previous_expires_at),
        api_keys::secret_hash.eq(new_hash),
    ))
    .returning(ApiKeyRow::as_returning())
    .get_result(conn)
    .await
    .optional()?)
}

/// Writes gathered `last_used_at` stamps, never moving one backwards.
pub async fn record_usage(conn: &mut Conn<'_>, usage: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
    for (id, at) in usage {
        diesel::update(
            api_keys::table
                .find(*id)
                .filter(api_keys::last_used_at.is_null().or(api_keys::last_used_at.lt(*at))),
        )
        .set(api_keys::last_used_at.eq(*at))
        .execute(conn)
        .await?;
    }
    Ok(())
}
