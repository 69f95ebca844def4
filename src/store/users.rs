use super::schema::users;
use super::{Cached, Conn, Shared, StoreResult};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

/// The `lock_reason` of a lock that failed passwords set (not an administrator).
pub(crate) const LOCKOUT: &str = "lockout";

#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub email_normalized: String,
    pub username: String,
    pub username_normalized: String,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub active: bool,
    pub locked_until: Option<DateTime<Utc>>,
    pub failed_logins: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub deletion_requested_at: Option<DateTime<Utc>>,
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
}

/// Shows who, never the password hash.
impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub username: &'a str,
    pub username_normalized: &'a str,
    pub password_hash: Option<&'a str>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut Conn<'_>, user: &NewUser<'_>) -> StoreResult<UserRow> {
    Ok(diesel::insert_into(users::table)
        .values(user)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn find(conn: &mut Conn<'_>, id: Uuid) -> StoreResult<Option<UserRow>> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_by_email(conn: &mut Conn<'_>, email_normalized: &str) -> StoreResult<Option<UserRow>> {
    Ok(users::table
        .filter(users::email_normalized.eq(email_normalized))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// An account with the providers it has linked (for `User.linked_providers`), read in one
/// statement by its normalised email or username.
pub async fn find_for_login(conn: &mut Conn<'_>, normalized: &str) -> StoreResult<Option<(UserRow, Vec<String>)>> {
    use diesel::sql_types::{Array, Text};
    let providers = diesel::dsl::sql::<Array<Text>>(
        "ARRAY(SELECT provider FROM user_identities WHERE user_identities.user_id = users.id ORDER BY provider)",
    );
    Ok(Cached(
        users::table
            .filter(
                users::email_normalized
                    .eq(normalized)
                    .or(users::username_normalized.eq(normalized)),
            )
            .select((UserRow::as_select(), providers))
            .limit(1),
    )
    .get_result(conn)
    .await
    .optional()?)
}

/// Records a sign-in on an account still fit for it, in one statement that also takes the row's
/// lock (serialising the sign-in with the account's other logins and revocations): active, not
/// locked (a lockout after failed passwords ignored when `honour_lockout` is false: a sign-in
/// that used no password), and still holding `verified_hash` (no reset since the check). Sets
/// the last login and clears the failed-password count; whether the account was fit.
pub async fn record_login(
    mut conn: Shared<'_>,
    id: Uuid,
    verified_hash: Option<&str>,
    honour_lockout: bool,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let unlocked = users::locked_until.is_null().or(users::locked_until.le(at));
    let update = diesel::update(
        users::table
            .find(id)
            .filter(users::active)
            .filter(users::password_hash.is_not_distinct_from(verified_hash)),
    )
    .set((users::last_login_at.eq(at), users::failed_logins.eq(0)));
    // Two texts, one for each value of `honour_lockout`.
    let updated = if honour_lockout {
        Cached(update.filter(unlocked)).execute(&mut conn).await?
    } else {
        Cached(update.filter(unlocked.or(users::lock_reason.eq(LOCKOUT))))
            .execute(&mut conn)
            .await?
    };
    Ok(updated == 1)
}

pub async fn set_password_hash(conn: &mut Conn<'_>, id: Uuid, hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Swaps the stored hash for `hash` only if it is still `expected`; returns whether it did.
pub async fn replace_password_hash(
    conn: &mut Conn<'_>,
    id: Uuid,
    expected: Option<&str>,
    hash: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let Some(expected) = expected else {
        return Ok(false);
    };
    let updated = diesel::update(users::table.find(id).filter(users::password_hash.eq(expected)))
        .set((users::password_hash.eq(hash), users::updated_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

pub async fn set_username(
    conn: &mut Conn<'_>,
    id: Uuid,
    username: &str,
    normalized: &str,
    at: DateTime<Utc>,
) -> StoreResult<UserRow> {
    Ok(diesel::update(users::table.find(id))
        .set((
            users::username.eq(username),
            users::username_normalized.eq(normalized),
            users::updated_at.eq(at),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn set_roles(conn: &mut Conn<'_>, id: Uuid, roles: &[String], at: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((users::roles.eq(roles), users::updated_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks a user's row for the rest of the transaction: logins, password changes and user-wide
/// revocations of one user happen one after another, never interleaved.
pub async fn lock(conn: &mut Conn<'_>, id: Uuid) -> StoreResult<Option<UserRow>> {
    Ok(users::table
        .find(id)
        .for_update()
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn mark_email_verified(conn: &mut Conn<'_>, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((users::email_verified.eq(true), users::updated_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the address with one just verified.
pub async fn set_verified_email(
    conn: &mut Conn<'_>,
    id: Uuid,
    email: &str,
    normalized: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((
            users::email.eq(email),
            users::email_normalized.eq(normalized),
            users::email_verified.eq(true),
            users::updated_at.eq(at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_deletion(
    conn: &mut Conn<'_>,
    id: Uuid,
    requested_at: Option<DateTime<Utc>>,
    scheduled_for: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((
            users::deletion_requested_at.eq(requested_at),
            users::deletion_scheduled_for.eq(scheduled_for),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks up to `limit` accounts whose deletion is due, skipping rows another replica holds; for
/// the caller's transaction.
pub async fn lock_due_deletions(conn: &mut Conn<'_>, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Uuid>> {
    Ok(users::table
        .filter(users::deletion_scheduled_for.le(now))
        .select(users::id)
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

/// Deletes accounts; their sessions, keys and one-time tokens go with them.
pub async fn delete(conn: &mut Conn<'_>, ids: &[Uuid]) -> StoreResult<usize> {
    Ok(diesel::delete(users::table.filter(users::id.eq_any(ids)))
        .execute(conn)
        .await?)
}

/// Counts a failed password for a user (whose row the caller has locked) and, at `threshold`
/// consecutive failures, locks password login until `lock_until`. Returns whether it locked.
pub async fn record_failed_login(
    conn: &mut Conn<'_>,
    user: &UserRow,
    threshold: u32,
    lock_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // An administrator's lock in force stays as it is: a lockout must not replace it (it would
    // end sooner, and bars less).
    if user.locked_until.is_some_and(|until| until > now) && user.lock_reason.as_deref() != Some(LOCKOUT) {
        return Ok(false);
    }
    let failures = user.failed_logins.saturating_add(1);
    let lock = threshold > 0 && failures >= i32::try_from(threshold).unwrap_or(i32::MAX);
    let query = diesel::update(users::table.find(user.id));
    if lock {
        query
            .set((
                users::failed_logins.eq(0),
                users::locked_until.eq(lock_until),
                users::lock_reason.eq(LOCKOUT),
            ))
            .execute(conn)
            .await?;
    } else {
        query.set(users::failed_logins.eq(failures)).execute(conn).await?;
    }
    Ok(lock)
}

/// Forgets the consecutive failed password checks.
pub async fn clear_failed_logins(conn: &mut Conn<'_>, id: Uuid) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set(users::failed_logins.eq(0))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets or lifts a lock (`until` None lifts it) and clears the failure count.
pub async fn set_lock(
    conn: &mut Conn<'_>,
    id: Uuid,
    until: Option<DateTime<Utc>>,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> StoreResult<UserRow> {
    Ok(diesel::update(users::table.find(id))
        .set((
            users::locked_until.eq(until),
            users::lock_reason.eq(reason),
            users::failed_logins.eq(0),
            users::updated_at.eq(at),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn set_active(conn: &mut Conn<'_>, id: Uuid, active: bool, at: DateTime<Utc>) -> StoreResult<()> {
    diesel::update(users::table.find(id))
        .set((users::active.eq(active), users::updated_at.eq(at)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Users in creation order after `after`, optionally those whose email or username starts with
/// `prefix` (lower case, LIKE wildcards escaped by the caller).
pub async fn list(
    conn: &mut Conn<'_>,
    prefix: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<UserRow>> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order(users::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    if let Some(prefix) = prefix {
        let pattern = format!("{prefix}%");
        query = query.filter(
            users::email_normalized
                .like(pattern.clone())
                .or(users::username_normalized.like(pattern)),
        );
    }
    Ok(query.load(conn).await?)
}
