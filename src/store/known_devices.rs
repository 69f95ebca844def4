//! The devices an account signed in from, by fingerprint (see `crate::devices`).

use super::schema::{known_devices, sessions};
use super::{Cached, Conn, Shared, StoreResult};
use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

/// Notes a sign-in from `fingerprint`: whether the account had not used it before. A known
/// device's `last_seen` is moved at most once a day (not a new row version at every login).
pub async fn remember(mut conn: Shared<'_>, user_id: Uuid, fingerprint: &str, now: DateTime<Utc>) -> StoreResult<bool> {
    use diesel::query_dsl::methods::FilterDsl;
    let inserted: Option<bool> = Cached(
        diesel::insert_into(known_devices::table)
            .values((
                known_devices::user_id.eq(user_id),
                known_devices::fingerprint.eq(fingerprint),
                known_devices::first_seen.eq(now),
                known_devices::last_seen.eq(now),
            ))
            .on_conflict((known_devices::user_id, known_devices::fingerprint))
            .do_update()
            .set(known_devices::last_seen.eq(excluded(known_devices::last_seen)))
            .filter(known_devices::last_seen.lt(now - chrono::Duration::days(1)))
            // A row this statement inserted has no deleting transaction yet; a known device seen
            // within the day gives no row.
            .returning(sql::<Bool>("xmax = 0")),
    )
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(inserted == Some(true))
}

/// Notes devices from before the account's devices were kept (first and last seen `now`).
pub async fn remember_all(
    conn: &mut Conn<'_>,
    user_id: Uuid,
    fingerprints: &[String],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let rows: Vec<_> = fingerprints
        .iter()
        .map(|fingerprint| {
            (
                known_devices::user_id.eq(user_id),
                known_devices::fingerprint.eq(fingerprint),
                known_devices::first_seen.eq(now),
                known_devices::last_seen.eq(now),
            )
        })
        .collect();
    diesel::insert_into(known_devices::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the account has a device on record other than `fingerprint`.
pub async fn has_other(conn: &mut Conn<'_>, user_id: Uuid, fingerprint: &str) -> StoreResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        known_devices::table
            .filter(known_devices::user_id.eq(user_id))
            .filter(known_devices::fingerprint.ne(fingerprint)),
    ))
    .get_result(conn)
    .await?)
}

/// The user agent and address of the account's latest live sessions but `except`, newest first.
pub async fn session_clients(
    conn: &mut Conn<'_>,
    user_id: Uuid,
    except: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<(Option<String>, Option<String>)>> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::id.ne(except))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .order(sessions::created_at.desc())
        .limit(limit)
        .select((sessions::user_agent, sessions::ip_address))
        .load(conn)
        .await?)
}

/// Forgets the account's devices beyond the `keep` seen last.
pub async fn forget_beyond(conn: &mut Conn<'_>, user_id: Uuid, keep: i64) -> StoreResult<()> {
    let beyond: Vec<String> = known_devices::table
        .filter(known_devices::user_id.eq(user_id))
        .order(known_devices::last_seen.desc())
        .offset(keep)
        .select(known_devices::fingerprint)
        .load(conn)
        .await?;
    if beyond.is_empty() {
        return Ok(());
    }
    diesel::delete(
        known_devices::table
            .filter(known_devices::user_id.eq(user_id))
            .filter(known_devices::fingerprint.eq_any(beyond)),
    )
    .execute(conn)
    .await?;
    Ok(())
}
