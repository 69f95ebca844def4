use super::schema::revocations;
use super::{Cached, Conn, Shared, StoreResult};
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

pub async fn insert_many(mut conn: Shared<'_>, rows: &[NewRevocation<'_>]) -> StoreResult<()> {
    match rows {
        [] => {}
        // The common case (a login past the session limit ends one): one text, kept
        // prepared; a batch's text depends on its length, and is prepared on each call.
        [row] => {
            Cached(diesel::insert_into(revocations::table).values(row))
                .execute(&mut conn)
                .await?;
        }
        _ => {
            diesel::insert_into(revocations::table)
                .values(rows)
                .execute(&mut conn)
                .await?;
        }
    }
    Ok(())
}

/// Inserts a revocation unless an equal one is recorded (one row per revoked token id, by a
/// unique index); returns whether it was new.
pub async fn insert_once(conn: &mut Conn<'_>, row: &NewRevocation<'_>) -> StoreResult<bool> {
    Ok(diesel::insert_into(revocations::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?
        == 1)
}

/// How many revocations of each kind still matter at `now`: (kind, count).
pub async fn live_counts(conn: &mut Conn<'_>, now: DateTime<Utc>) -> StoreResult<Vec<(String, i64)>> {
    Ok(revocations::table
        .filter(revocations::expires_at.gt(now))
        .group_by(revocations::kind)
        .select((revocations::kind, diesel::dsl::count_star()))
        .load(conn)
        .await?)
}

/// What had not ended at a moment, by transaction: taken before a read, it says which rows that
/// read may have missed, those recorded by a transaction in progress then (`in_progress`) or
/// begun later (`first_unassigned` onward). Every other transaction had ended, so the read saw
/// its rows. The `server` (its address and start) tells a read whether the numbers go on from
/// the last one's: a restarted or promoted server may hand out again numbers the old one used.
#[derive(Clone, Debug, PartialEq, Eq, diesel::QueryableByName)]
pub struct Horizon {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub first_unassigned: i64,
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::BigInt>)]
    pub in_progress: Vec<i64>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub server: String,
}

impl Horizon {
    /// Whether a read from `self` covers what was missed before `later`: the same server, and
    /// numbers that did not go back.
    pub fn continues_into(&self, later: &Horizon) -> bool {
        self.server == later.server && later.first_unassigned >= self.first_unassigned
    }
}

/// The current [`Horizon`].
pub async fn horizon(conn: &mut Conn<'_>) -> StoreResult<Horizon> {
    Ok(diesel::sql_query(
        "SELECT pg_snapshot_xmax(s)::text::bigint AS first_unassigned,
                ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x) AS in_progress,
                pg_postmaster_start_time()::text || ' ' || coalesce(host(inet_server_addr()), 'socket')
                    || ':' || coalesce(inet_server_port(), 0)::text AS server
         FROM pg_current_snapshot() AS s",
    )
    .get_result(conn)
    .await?)
}

/// Up to `limit` revocations that still matter at `now`, recorded by a transaction that had not
/// ended at `since` (every one if `None`), in id order from after `after_id` (a page; the next
/// starts after the last id returned).
pub async fn recorded_since(
    conn: &mut Conn<'_>,
    since: Option<&Horizon>,
    now: DateTime<Utc>,
    after_id: i64,
    limit: i64,
) -> StoreResult<Vec<RevocationRow>> {
    let mut query = revocations::table
        .filter(revocations::expires_at.gt(now))
        .filter(revocations::id.gt(after_id))
        .into_boxed();
    if let Some(since) = since {
        query = query.filter(
            revocations::xact
                .ge(since.first_unassigned)
                .or(revocations::xact.eq_any(since.in_progress.clone())),
        );
    }
    Ok(query
        .order(revocations::id.asc())
        .limit(limit)
        .select(RevocationRow::as_select())
        .load(conn)
        .await?)
}

/// Whether an access token is revoked, by its session, its id, or its user (a user revocation
/// in a later second than the token's `iat`): the same rule as the in-process view.
pub async fn access_token_revoked(
    conn: &mut Conn<'_>,
    sid: &str,
    jti: &str,
    sub: &str,
    iat: i64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let issued_second_end = DateTime::from_timestamp(iat + 1, 0).unwrap_or(now);
    let by_subject = revocations::kind
        .eq("session")
        .and(revocations::subject_id.eq(sid))
        .or(revocations::kind.eq("token").and(revocations::subject_id.eq(jti)))
        .or(revocations::kind
            .eq("user")
            .and(revocations::subject_id.eq(sub))
            .and(revocations::created_at.ge(issued_second_end)));
    Ok(diesel::select(diesel::dsl::exists(
        revocations::table
            .filter(revocations::expires_at.gt(now))
            .filter(by_subject),
    ))
    .get_result(conn)
    .await?)
}

/// Whether an API key is revoked, directly or by a user revocation after it was created.
pub async fn api_key_revoked(
    conn: &mut Conn<'_>,
    key_id: &str,
    owner: &str,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let by_subject = revocations::kind
        .eq("api_key")
        .and(revocations::subject_id.eq(key_id))
        .or(revocations::kind
            .eq("user")
            .and(revocations::subject_id.eq(owner))
            .and(revocations::created_at.gt(created_at)));
    Ok(diesel::select(diesel::dsl::exists(
        revocations::table
            .filter(revocations::expires_at.gt(now))
            .filter(by_subject),
    ))
    .get_result(conn)
    .await?)
}

/// Deletes revocations that no longer concern any credential.
pub async fn purge_expired(conn: &mut Conn<'_>, now: DateTime<Utc>) -> StoreResult<usize> {
    Ok(
        diesel::delete(revocations::table.filter(revocations::expires_at.lt(now)))
            .execute(conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::Horizon;

    fn horizon(first_unassigned: i64, server: &str) -> Horizon {
        Horizon {
            first_unassigned,
            in_progress: vec![],
            server: server.into(),
        }
    }

    #[test]
    fn a_read_goes_on_from_the_last_only_on_the_same_server_with_numbers_that_did_not_go_back() {
        let last = horizon(100, "2026-12-02 10:00:00+00 10.0.0.1:5432");
        assert!(last.continues_into(&horizon(100, "2026-12-02 10:00:00+00 10.0.0.1:5432")));
        assert!(last.continues_into(&horizon(250, "2026-12-02 10:00:00+00 10.0.0.1:5432")));
        // Restarted, or a standby promoted that hands out ids the old primary had used.
        assert!(!last.continues_into(&horizon(250, "2026-12-02 11:00:00+00 10.0.0.1:5432")));
        assert!(!last.continues_into(&horizon(250, "2026-12-02 10:00:00+00 10.0.0.2:5432")));
        assert!(!last.continues_into(&horizon(99, "2026-12-02 10:00:00+00 10.0.0.1:5432")));
    }
}
