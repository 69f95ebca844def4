//! Postgres access: the pool, the embedded migrations, and one module of plain query functions per
//! table. Nothing outside this module writes SQL.

pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod identities;
pub(crate) mod known_devices;
/// Public for the tests of the outbox's claims (tests/api/mail.rs); the rest is the crate's.
pub mod mail;
pub(crate) mod mail_requests;
pub(crate) mod one_time_tokens;
pub(crate) mod revocations;
#[rustfmt::skip]
pub(crate) mod schema;
pub(crate) mod sessions;
pub(crate) mod signing_keys;
mod spans;
pub(crate) mod users;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::time::Duration;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type Conn<'a> = bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;
/// A connection that statements share to be sent at once (pipelined: the client waits one
/// round trip for all of them, and Postgres runs them one after another). A `&mut Conn`
/// passes for one. Only statements independent of one another go out together: they may run
/// in any order.
pub type Shared<'a> = &'a AsyncPgConnection;

/// A statement with few texts (each fixed where it is written), prepared once per connection
/// and kept by its text. Diesel prepares every `UPDATE`, raw `sql_query`, `sql` fragment and
/// insert of a derived `Insertable` (its fields may be `DEFAULT`) anew on each call (one round
/// trip more, and a parse and plan in Postgres), because such statements *can* be built with
/// unboundedly many texts; the ones wrapped here cannot (no list whose length varies: at most
/// one text for each combination of their optional fields). `is_safe_to_cache_prepared` is
/// hidden in diesel's documentation (a method for backends); overriding it is how a statement
/// says it may be cached.
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

/// Kept by its SQL text (and bind types), not by its Rust type.
impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

/// A failed store operation, classified for the rules above it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (pool timeout, connection refused or broken).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint refused the write; carries the constraint's name.
    #[error("unique violation on {0}")]
    Conflict(String),
    #[error("row not found")]
    NotFound,
    #[error("database error: {0}")]
    Other(String),
}

impl From<DieselError> for StoreError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Self::Conflict(info.constraint_name().unwrap_or_default().to_string())
            }
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_string()),
            DieselError::DatabaseError(_, info) if is_transient(info.message()) => {
                Self::Unavailable(info.message().to_string())
            }
            DieselError::BrokenTransactionManager => Self::Unavailable(err.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

/// Server-side conditions that pass when the database is back (shutdown, restart, overload), as
/// Postgres words them; diesel does not expose the SQLSTATE.
fn is_transient(message: &str) -> bool {
    const MARKERS: &[&str] = &[
        "terminating connection",
        "the database system is",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "could not serialize access",
        "deadlock detected",
        "too many clients",
        "connection closed",
        "connection reset",
    ];
    MARKERS.iter().any(|m| message.contains(m))
}

impl From<bb8::RunError<PoolError>> for StoreError {
    fn from(err: bb8::RunError<PoolError>) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<StoreError> for crate::error::Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Self::Unavailable
            }
            StoreError::NotFound => Self::NotFound("record"),
            other => Self::internal(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Builds the pool. Each connection gets a statement timeout so that no query can hang a call.
pub async fn connect(database_url: &str, max_size: u32) -> StoreResult<Pool> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = setup_callback(|url| {
        Box::pin(async move {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.set_instrumentation(spans::QuerySpans::default());
            conn.batch_execute("SET statement_timeout = '10s'; SET lock_timeout = '5s'")
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(3))
        .retry_connection(false)
        .build(manager)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

type SetupFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = diesel::ConnectionResult<AsyncPgConnection>> + Send + 'a>>;

/// Gives a closure the higher-ranked signature `ManagerConfig::custom_setup` needs.
fn setup_callback<F>(f: F) -> diesel_async::pooled_connection::SetupCallback<AsyncPgConnection>
where
    F: for<'a> Fn(&'a str) -> SetupFuture<'a> + Send + Sync + 'static,
{
    Box::new(f)
}

/// Checks out a connection; the error is `Unavailable` when the database is unreachable.
pub async fn conn(pool: &Pool) -> StoreResult<Conn<'_>> {
    Ok(pool.get().await?)
}

/// Applies pending migrations; returns the versions applied. Idempotent.
pub async fn migrate(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        use diesel::Connection;
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await?
}

/// Whether the schema lacks migrations this binary knows.
pub async fn pending_migrations(database_url: &str) -> anyhow::Result<usize> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        use diesel::Connection;
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("cannot read the schema version: {e}"))?;
        Ok(pending.len())
    })
    .await?
}

/// A trivial query, for health checks.
pub async fn ping(pool: &Pool) -> StoreResult<()> {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = conn(pool).await?;
    conn.batch_execute("SELECT 1").await?;
    Ok(())
}

/// Takes a transaction-scoped advisory lock if free: one replica at a time does the work it
/// guards, the others skip it this round.
pub async fn try_lock_for_transaction(conn: &mut Conn<'_>, key: i64) -> StoreResult<bool> {
    use diesel::sql_types::{BigInt, Bool};
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    use diesel_async::RunQueryDsl;
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
        .bind::<BigInt, _>(key)
        .get_result(conn)
        .await?;
    Ok(row.locked)
}
