use super::schema::mail_outbox;
use super::{Conn, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = mail_outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub sealed_message: Option<Vec<u8>>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// The claim this row was read under: the writes below land only while it is still held.
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Insertable)]
#[diesel(table_name = mail_outbox)]
pub struct NewOutboxRow<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    pub sealed_message: Option<&'a [u8]>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut Conn<'_>, row: &NewOutboxRow<'_>) -> StoreResult<()> {
    diesel::insert_into(mail_outbox::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Mails of a kind written for an address since `since`, delivered or not.
pub async fn count_recent(conn: &mut Conn<'_>, recipient: &str, kind: &str, since: DateTime<Utc>) -> StoreResult<i64> {
    Ok(mail_outbox::table
        .filter(mail_outbox::recipient.eq(recipient))
        .filter(mail_outbox::kind.eq(kind))
        .filter(mail_outbox::created_at.gt(since))
        .count()
        .get_result(conn)
        .await?)
}

/// When the latest mail of a kind for an address was written (or is to go out, if deferred).
pub async fn latest_written(conn: &mut Conn<'_>, recipient: &str, kind: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(mail_outbox::table
        .filter(mail_outbox::recipient.eq(recipient))
        .filter(mail_outbox::kind.eq(kind))
        .select(diesel::dsl::max(mail_outbox::created_at))
        .get_result(conn)
        .await?)
}

/// Whether a mail of a kind for an address waits to go out after `now` (deferred).
pub async fn has_deferred(conn: &mut Conn<'_>, recipient: &str, kind: &str, now: DateTime<Utc>) -> StoreResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        mail_outbox::table
            .filter(mail_outbox::recipient.eq(recipient))
            .filter(mail_outbox::kind.eq(kind))
            .filter(mail_outbox::created_at.gt(now))
            .filter(mail_outbox::sent_at.is_null())
            .filter(mail_outbox::failed_at.is_null()),
    ))
    .get_result(conn)
    .await?)
}

/// Mail neither delivered nor abandoned, but for mail deferred past `now` (a notice waiting for
/// its hour is no backlog).
pub async fn pending(conn: &mut Conn<'_>, now: DateTime<Utc>) -> StoreResult<i64> {
    Ok(mail_outbox::table
        .filter(mail_outbox::created_at.le(now))
        .filter(mail_outbox::sent_at.is_null())
        .filter(mail_outbox::failed_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// Claims the oldest due mail for `lease`, skipping rows another worker holds: safe with any
/// number of replicas delivering at once. One at a time, so a replica that dies holds one mail.
pub async fn claim_next(
    conn: &mut Conn<'_>,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> StoreResult<Option<OutboxRow>> {
    use diesel_async::AsyncConnection;
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(due): Option<i64> = mail_outbox::table
                .filter(mail_outbox::sent_at.is_null())
                .filter(mail_outbox::failed_at.is_null())
                .filter(mail_outbox::next_attempt_at.le(now))
                .filter(mail_outbox::lease_until.is_null().or(mail_outbox::lease_until.lt(now)))
                .order(mail_outbox::id.asc())
                .select(mail_outbox::id)
                .for_update()
                .skip_locked()
                .first(conn)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            diesel::update(mail_outbox::table.find(due))
                .set(mail_outbox::lease_until.eq(now + lease))
                .returning(OutboxRow::as_returning())
                .get_result(conn)
                .await
                .optional()
        })
        .await?)
}

/// The row of `mail` while its claim holds: unsent, and not claimed again since.
macro_rules! claimed {
    ($mail:expr) => {
        mail_outbox::table
            .find($mail.id)
            .filter(mail_outbox::sent_at.is_null())
            .filter(mail_outbox::lease_until.is_not_distinct_from($mail.lease_until))
    };
}

/// Delivered: the sealed message is dropped at once. False when the claim was lost (it ran out
/// and another worker holds the mail): nothing is written.
pub async fn mark_sent(conn: &mut Conn<'_>, mail: &OutboxRow, now: DateTime<Utc>) -> StoreResult<bool> {
    let updated = diesel::update(claimed!(mail))
        .set((
            mail_outbox::sent_at.eq(now),
            mail_outbox::sealed_message.eq(None::<Vec<u8>>),
            mail_outbox::lease_until.eq(None::<DateTime<Utc>>),
            mail_outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Not delivered this time: try again at `next`. False when the claim was lost.
pub async fn mark_retry(conn: &mut Conn<'_>, mail: &OutboxRow, error: &str, next: DateTime<Utc>) -> StoreResult<bool> {
    let updated = diesel::update(claimed!(mail))
        .set((
            mail_outbox::attempts.eq(mail_outbox::attempts + 1),
            mail_outbox::next_attempt_at.eq(next),
            mail_outbox::lease_until.eq(None::<DateTime<Utc>>),
            mail_outbox::last_error.eq(error),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Given up on: the message (and the link in it) is dropped. False when the claim was lost.
pub async fn mark_abandoned(
    conn: &mut Conn<'_>,
    mail: &OutboxRow,
    error: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let updated = diesel::update(claimed!(mail))
        .set((
            mail_outbox::attempts.eq(mail_outbox::attempts + 1),
            mail_outbox::failed_at.eq(now),
            mail_outbox::lease_until.eq(None::<DateTime<Utc>>),
            mail_outbox::last_error.eq(error),
            mail_outbox::sealed_message.eq(None::<Vec<u8>>),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Deletes delivered or abandoned mail older than `before`.
pub async fn purge_finished(conn: &mut Conn<'_>, before: DateTime<Utc>) -> StoreResult<usize> {
    Ok(
        diesel::delete(
            mail_outbox::table.filter(mail_outbox::sent_at.lt(before).or(mail_outbox::failed_at.lt(before))),
        )
        .execute(conn)
        .await?,
    )
}
