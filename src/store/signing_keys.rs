use super::schema::signing_keys;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys, check_for_backend(diesel::pg::Pg))]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_key_encrypted: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Keys still worth loading: the active one and those retired after `retired_after`.
pub async fn load_published(conn: &mut Conn<'_>, retired_after: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRow>> {
    Ok(signing_keys::table
        .filter(
            signing_keys::retired_at
                .is_null()
                .or(signing_keys::retired_at.gt(retired_after)),
        )
        .order(signing_keys::created_at.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await?)
}

pub async fn list_all(conn: &mut Conn<'_>) -> StoreResult<Vec<SigningKeyRow>> {
    Ok(signing_keys::table
        .order(signing_keys::created_at.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await?)
}

/// Inserts a new key and retires every other active key, atomically.
pub async fn insert_and_retire_others(conn: &mut Conn<'_>, key: &SigningKeyRow) -> StoreResult<()> {
    use diesel_async::AsyncConnection;
    let key = key.clone();
    conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
        diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
            .set(signing_keys::retired_at.eq(key.created_at))
            .execute(conn)
            .await?;
        diesel::insert_into(signing_keys::table)
            .values(&key)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Inserts the first key unless another replica got there first; returns whether it was inserted.
pub async fn insert_if_none_active(conn: &mut Conn<'_>, key: &SigningKeyRow) -> StoreResult<bool> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let key = key.clone();
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            // Serialises concurrent first starts of several replicas.
            conn.batch_execute("SELECT pg_advisory_xact_lock(7201)").await?;
            let active: i64 = signing_keys::table
                .filter(signing_keys::retired_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if active > 0 {
                return Ok(false);
            }
            diesel::insert_into(signing_keys::table)
                .values(&key)
                .execute(conn)
                .await?;
            Ok(true)
        })
        .await?)
}
