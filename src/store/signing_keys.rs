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
    /// When it starts signing (published from `created_at`).
    pub activates_at: DateTime<Utc>,
    /// When it was dropped from the JWKS at once (`authd keys revoke`).
    pub revoked_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Keys still worth loading: those not revoked, and not retired before `retired_after`.
pub async fn load_published(conn: &mut Conn<'_>, retired_after: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRow>> {
    Ok(signing_keys::table
        .filter(signing_keys::revoked_at.is_null())
        .filter(
            signing_keys::retired_at
                .is_null()
                .or(signing_keys::retired_at.gt(retired_after)),
        )
        .order(signing_keys::activates_at.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await?)
}

pub async fn list_all(conn: &mut Conn<'_>) -> StoreResult<Vec<SigningKeyRow>> {
    Ok(signing_keys::table
        .order(signing_keys::activates_at.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await?)
}

/// When the newest key not revoked begins (or began) signing.
pub async fn latest_activation(conn: &mut Conn<'_>) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(latest(conn).await?)
}

async fn latest(conn: &mut Conn<'_>) -> diesel::QueryResult<Option<DateTime<Utc>>> {
    signing_keys::table
        .filter(signing_keys::revoked_at.is_null())
        .select(diesel::dsl::max(signing_keys::activates_at))
        .get_result(conn)
        .await
}

/// Serialises changes to the key set across replicas and the command line, for the rest of the
/// caller's transaction.
async fn lock_keys(conn: &mut Conn<'_>) -> diesel::QueryResult<()> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("SELECT pg_advisory_xact_lock(7201)").await
}

/// Inserts `key` as the next one: every key not yet retired retires when it activates. With
/// `due_before`, only when the latest activation is older than that (an automatic rotation that
/// another replica may have made already). Returns whether the key was inserted.
pub async fn insert_next(
    conn: &mut Conn<'_>,
    key: &SigningKeyRow,
    due_before: Option<DateTime<Utc>>,
) -> StoreResult<bool> {
    use diesel_async::AsyncConnection;
    let key = key.clone();
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            lock_keys(conn).await?;
            // Another replica rotated since this one asked.
            if let Some(due_before) = due_before
                && latest(conn).await?.is_some_and(|at| at > due_before)
            {
                return Ok(false);
            }
            diesel::update(
                signing_keys::table.filter(signing_keys::revoked_at.is_null()).filter(
                    signing_keys::retired_at
                        .is_null()
                        .or(signing_keys::retired_at.gt(key.activates_at)),
                ),
            )
            .set(signing_keys::retired_at.eq(key.activates_at))
            .execute(conn)
            .await?;
            diesel::insert_into(signing_keys::table)
                .values(&key)
                .execute(conn)
                .await?;
            Ok(true)
        })
        .await?)
}

/// Inserts the first key unless another replica got there first; returns whether it was inserted.
pub async fn insert_if_none_active(conn: &mut Conn<'_>, key: &SigningKeyRow) -> StoreResult<bool> {
    use diesel_async::AsyncConnection;
    let key = key.clone();
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            // Serialises concurrent first starts of several replicas.
            lock_keys(conn).await?;
            let active: i64 = signing_keys::table
                .filter(signing_keys::retired_at.is_null())
                .filter(signing_keys::revoked_at.is_null())
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

/// What [`revoke`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    Done,
    Unknown,
    /// The key is not retired (it signs now, or will): it was left alone.
    NotRetired,
}

/// Revokes `kid` (again revoking is fine) if it is retired at `now`. A key that signs now or
/// later is left alone: with it gone, some instant could have no key to sign with.
pub async fn revoke(conn: &mut Conn<'_>, kid: &str, now: DateTime<Utc>) -> StoreResult<Revoked> {
    use diesel_async::AsyncConnection;
    let kid = kid.to_string();
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            lock_keys(conn).await?;
            let live: Vec<SigningKeyRow> = signing_keys::table
                .filter(signing_keys::revoked_at.is_null())
                .select(SigningKeyRow::as_select())
                .load(conn)
                .await?;
            match live.iter().find(|row| row.kid == kid) {
                None => {
                    let known: i64 = signing_keys::table
                        .filter(signing_keys::kid.eq(&kid))
                        .count()
                        .get_result(conn)
                        .await?;
                    return Ok(if known > 0 { Revoked::Done } else { Revoked::Unknown });
                }
                Some(row) if row.retired_at.is_none_or(|end| end > now) => return Ok(Revoked::NotRetired),
                Some(_) => {}
            }
            diesel::update(signing_keys::table.filter(signing_keys::kid.eq(&kid)))
                .set(signing_keys::revoked_at.eq(now))
                .execute(conn)
                .await?;
            Ok(Revoked::Done)
        })
        .await?)
}
