use super::schema::audit_events;
use super::{Cached, Conn, Shared, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub event_type: String,
    pub user_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub details: String,
}

pub async fn insert(mut conn: Shared<'_>, row: &AuditRow) -> StoreResult<()> {
    Cached(diesel::insert_into(audit_events::table).values(row))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// The account's latest `limit` events of one type, newest first (by id: the index's order, so
/// however many older ones the account has, no more than `limit` are read).
pub async fn latest_of_type(
    conn: &mut Conn<'_>,
    user_id: Uuid,
    event_type: &str,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    Ok(audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::event_type.eq(event_type))
        .order(audit_events::id.desc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
        .await?)
}

/// The user agent and address of the account's latest `limit` sign-ins (`login.succeeded`) but
/// the one that opened `except`, newest first.
pub async fn sign_in_clients(
    conn: &mut Conn<'_>,
    user_id: Uuid,
    except: Uuid,
    limit: i64,
) -> StoreResult<Vec<(Option<String>, Option<String>)>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Text};
    Ok(audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::event_type.eq("login.succeeded"))
        .filter(sql::<Bool>("(details::jsonb ->> 'session_id') IS DISTINCT FROM ").bind::<Text, _>(except.to_string()))
        .order(audit_events::id.desc())
        .limit(limit)
        .select((audit_events::user_agent, audit_events::ip_address))
        .load(conn)
        .await?)
}

/// What the burst check reads of a failed login.
#[derive(Queryable)]
pub struct FailedLogin {
    pub occurred_at: DateTime<Utc>,
    pub ip_address: Option<String>,
    pub reason: Option<String>,
}

/// The account's latest `limit` failed logins, newest first (no more than `limit` are read).
pub async fn latest_failed_logins(conn: &mut Conn<'_>, user_id: Uuid, limit: i64) -> StoreResult<Vec<FailedLogin>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Nullable, Text};
    Ok(audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::event_type.eq("login.failed"))
        .order(audit_events::id.desc())
        .limit(limit)
        .select((
            audit_events::occurred_at,
            audit_events::ip_address,
            sql::<Nullable<Text>>("details::jsonb ->> 'reason'"),
        ))
        .load(conn)
        .await?)
}

/// Inserts many rows, a thousand per statement.
pub async fn insert_many(conn: &mut Conn<'_>, rows: &[AuditRow]) -> StoreResult<()> {
    for chunk in rows.chunks(1000) {
        diesel::insert_into(audit_events::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// What to list.
#[derive(Debug, Default)]
pub struct AuditFilter<'a> {
    pub user_id: Option<Uuid>,
    pub event_type: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Newest first: events older than this id.
    pub before_id: Option<i64>,
}

/// A page of events, newest first. The ids are chosen first, by a query that can be answered
/// from an index alone (`(user_id, type, id)`, `(user_id, id)`, `(type, id)` or the primary
/// key), then their rows are read: asked for whole rows at once, the planner would rather walk
/// the primary key backwards and filter, which reads the whole table when the user has few
/// events of the type asked for.
pub async fn list(conn: &mut Conn<'_>, filter: &AuditFilter<'_>, limit: i64) -> StoreResult<Vec<AuditRow>> {
    let mut ids = audit_events::table
        .select(audit_events::id)
        .order(audit_events::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(user_id) = filter.user_id {
        ids = ids.filter(audit_events::user_id.eq(user_id));
    }
    if let Some(event_type) = filter.event_type {
        ids = ids.filter(audit_events::event_type.eq(event_type.to_string()));
    }
    if let Some(since) = filter.since {
        ids = ids.filter(audit_events::occurred_at.ge(since));
    }
    if let Some(until) = filter.until {
        ids = ids.filter(audit_events::occurred_at.lt(until));
    }
    if let Some(before) = filter.before_id {
        ids = ids.filter(audit_events::id.lt(before));
    }
    Ok(audit_events::table
        .filter(audit_events::id.eq_any(ids))
        .select(AuditRow::as_select())
        .order(audit_events::id.desc())
        .load(conn)
        .await?)
}

/// The highest id of the events that occurred in `[from, before)`. Aggregated over those rows
/// (found by time): `max(id)` alone would walk the primary key down from the newest event past
/// every later one (1.8 s for a day at the start of 10 million events; `id + 0` keeps the
/// planner off that path), so the cost follows the rows in range, not the table.
pub async fn last_id_before(
    conn: &mut Conn<'_>,
    from: Option<DateTime<Utc>>,
    before: DateTime<Utc>,
) -> StoreResult<Option<i64>> {
    let mut query = audit_events::table
        .filter(audit_events::occurred_at.lt(before))
        .select(diesel::dsl::max(audit_events::id + 0_i64))
        .into_boxed();
    if let Some(from) = from {
        query = query.filter(audit_events::occurred_at.ge(from));
    }
    Ok(query.get_result(conn).await?)
}

/// When the oldest event occurred (from the time index, however large the table).
pub async fn oldest_time(conn: &mut Conn<'_>) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(audit_events::table
        .select(diesel::dsl::min(audit_events::occurred_at))
        .get_result(conn)
        .await?)
}

/// The events with ids in `(after_id, last_id]`, oldest id first: a range of the primary key,
/// so a page costs its rows whatever the table holds (with a time filter too, the planner
/// would read every row of the time range for each page).
pub async fn page(conn: &mut Conn<'_>, after_id: i64, last_id: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
    Ok(audit_events::table
        .filter(audit_events::id.gt(after_id))
        .filter(audit_events::id.le(last_id))
        .select(AuditRow::as_select())
        .order(audit_events::id.asc())
        .limit(limit)
        .load(conn)
        .await?)
}

/// Deletes the events with ids in `[first, last]`; returns how many there were.
pub async fn delete_ids_between(conn: &mut Conn<'_>, first: i64, last: i64) -> StoreResult<usize> {
    Ok(
        diesel::delete(audit_events::table.filter(audit_events::id.between(first, last)))
            .execute(conn)
            .await?,
    )
}

pub async fn purge_older(conn: &mut Conn<'_>, before: DateTime<Utc>) -> StoreResult<usize> {
    Ok(
        diesel::delete(audit_events::table.filter(audit_events::occurred_at.lt(before)))
            .execute(conn)
            .await?,
    )
}
