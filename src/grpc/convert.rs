//! Conversions between stored rows and protobuf messages.

use crate::proto;
use crate::store::{api_keys::ApiKeyRow, sessions::SessionRow, users::UserRow};
use chrono::{DateTime, TimeZone, Utc};

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn opt_timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(timestamp)
}

/// A protobuf timestamp as a point in time; `None` when out of range.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, u32::try_from(ts.nanos).ok()?).single()
}

pub fn from_duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(std::time::Duration::new(seconds, nanos))
}

/// Users as answered, with the providers each has linked.
pub async fn users(
    accounts: &crate::accounts::Accounts,
    rows: &[UserRow],
    now: DateTime<Utc>,
) -> crate::error::Result<Vec<proto::User>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let mut linked = accounts.linked_providers(&ids).await?;
    Ok(rows
        .iter()
        .map(|row| proto::User {
            linked_providers: linked.remove(&row.id).unwrap_or_default(),
            ..user(row, now)
        })
        .collect())
}

/// One user as answered, with the providers it has linked.
pub async fn linked_user(
    accounts: &crate::accounts::Accounts,
    row: &UserRow,
    now: DateTime<Utc>,
) -> crate::error::Result<proto::User> {
    Ok(users(accounts, std::slice::from_ref(row), now).await?.remove(0))
}

/// The user of a sign-in that already opened its session: the linked providers if they can be
/// read, else none (the session is there; failing now would leave it to nobody).
pub async fn signed_in_user(
    accounts: &crate::accounts::Accounts,
    done: &crate::accounts::LoggedIn,
    now: DateTime<Utc>,
) -> proto::User {
    let row = &done.user;
    if let Some(linked) = &done.linked_providers {
        return proto::User {
            linked_providers: linked.clone(),
            ..user(row, now)
        };
    }
    match linked_user(accounts, row, now).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(error = %e.detail(), "cannot read the linked providers of a signed-in user");
            user(row, now)
        }
    }
}

/// A user as answered, without its linked providers (a user just registered has none).
pub fn user(row: &UserRow, now: DateTime<Utc>) -> proto::User {
    proto::User {
        linked_providers: Vec::new(),
        id: row.id.to_string(),
        email: row.email.clone(),
        username: row.username.clone(),
        email_verified: row.email_verified,
        roles: row.roles.clone(),
        active: row.active,
        created_at: Some(timestamp(row.created_at)),
        last_login_at: opt_timestamp(row.last_login_at),
        locked_until: opt_timestamp(row.locked_until.filter(|until| *until > now)),
    }
}

pub fn session(row: &SessionRow, current: Option<uuid::Uuid>) -> proto::Session {
    proto::Session {
        id: row.id.to_string(),
        created_at: Some(timestamp(row.created_at)),
        last_used_at: Some(timestamp(row.last_used_at)),
        expires_at: Some(timestamp(row.expires_at)),
        ip_address: row.ip_address.clone().unwrap_or_default(),
        user_agent: row.user_agent.clone().unwrap_or_default(),
        device_name: row.device_name.clone().unwrap_or_default(),
        current: current == Some(row.id),
    }
}

/// The public description of a key: never its secret or hash.
pub fn api_key(row: &ApiKeyRow) -> proto::ApiKey {
    proto::ApiKey {
        id: row.id.to_string(),
        label: row.label.clone(),
        prefix: row.prefix.clone(),
        scopes: row.scopes.clone(),
        created_at: Some(timestamp(row.created_at)),
        expires_at: opt_timestamp(row.expires_at),
        last_used_at: opt_timestamp(row.last_used_at),
        revoked_at: opt_timestamp(row.revoked_at),
    }
}

pub fn tokens(issued: crate::sessions::IssuedTokens) -> proto::TokenPair {
    proto::TokenPair {
        access_token: issued.access_token.expose().clone(),
        refresh_token: issued.refresh_token.expose().clone(),
        token_type: "Bearer".into(),
        expires_in: issued.expires_in,
        refresh_expires_in: issued.refresh_expires_in,
        session_id: issued.session_id.to_string(),
    }
}
