//! The one writer of revocations: it records them in Postgres (in the caller's transaction or its
//! own), applies them to this replica's view, drops what caches hold of the credentials
//! concerned, tells the watchers, and queues them for the feed to the other replicas.

use super::{Feed, Revocation, RevocationKind, RevocationView, StoredRevocation, Watchers};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::{self, Conn, Pool};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A cache of credentials that must forget what a revocation concerns (the API-key cache).
pub trait ForgetsRevoked: Send + Sync {
    fn forget(&self, revocation: &Revocation);
}

/// Revocations read from Postgres per query when the view is (re)built.
const LOAD_PAGE: i64 = 10_000;

pub struct Revoker {
    pool: Pool,
    clock: Clock,
    view: RevocationView,
    feed: Feed,
    watchers: Watchers,
    caches: Vec<Arc<dyn ForgetsRevoked>>,
    /// How long after the revocation instant a revoked access token could still be presented.
    lifetime: chrono::Duration,
    /// Revocations for the Redis feed, sent by the publisher task so no call waits on Redis.
    outbox: mpsc::UnboundedSender<Vec<Revocation>>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Revocation>>>>,
    /// Where the next read of Postgres starts: the transactions that had not ended when the last
    /// complete read began (every revocation recorded by another one is in the view). `None`
    /// before the first.
    read_from: Mutex<Option<store::revocations::Horizon>>,
}

impl Revoker {
    /// `access_token_ttl` bounds how long a revoked token could still be presented, and so how
    /// long each revocation entry must live.
    pub fn new(
        pool: Pool,
        clock: Clock,
        feed: Feed,
        caches: Vec<Arc<dyn ForgetsRevoked>>,
        access_token_ttl: std::time::Duration,
    ) -> Self {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let lifetime = chrono::Duration::from_std(access_token_ttl).unwrap_or(chrono::Duration::hours(1))
            + chrono::Duration::seconds(authd_client::verify::LEEWAY_SECS + 60);
        Self {
            pool,
            clock,
            view: RevocationView::default(),
            watchers: Watchers::new(feed.origin()),
            feed,
            caches,
            lifetime,
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            read_from: Mutex::new(None),
        }
    }

    /// The in-process view the hot path consults.
    pub fn view(&self) -> &RevocationView {
        &self.view
    }

    /// This replica's end of the feed between replicas.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The `WatchRevocations` streams of this replica.
    pub fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    /// How long after the revocation instant a revoked access token could still be presented.
    pub fn lifetime(&self) -> chrono::Duration {
        self.lifetime
    }

    /// Rebuilds the view from Postgres (every live revocation), its tables sized for them first:
    /// growing them entry by entry would leave the smaller tables behind as freed memory that
    /// the allocator keeps.
    pub async fn load(&self) -> Result<usize> {
        let counts = {
            let mut conn = store::conn(&self.pool).await?;
            store::revocations::live_counts(&mut conn, self.clock.now()).await?
        };
        for (kind, count) in counts {
            if let Some(kind) = RevocationKind::parse(&kind) {
                self.view.reserve(kind, usize::try_from(count).unwrap_or(0));
            }
        }
        self.absorb_from_store(None).await
    }

    /// Reads what was recorded since the last complete read began: every row of a transaction
    /// that had not ended then (commit order, whatever the ids or the writers' clocks say). The
    /// safety net under the feed, every `AUTHD_REVOCATION_RESYNC_INTERVAL`: it carries a
    /// revocation to this replica within one interval of its commit whatever happened to the
    /// feed: a message lost on the way, a call cancelled between its commit and its broadcast, a
    /// replica that revoked it while cut off from Redis, a failover that lost what was published.
    pub async fn catch_up(&self) -> Result<usize> {
        self.read_since_last().await
    }

    /// The same read after the feed is (re)subscribed: it makes the view current without reading
    /// every live revocation again.
    pub async fn resync(&self) -> Result<usize> {
        self.read_since_last().await
    }

    async fn read_since_last(&self) -> Result<usize> {
        let from = self.read_from.lock().expect("read_from lock").clone();
        match from {
            None => self.load().await,
            from => self.absorb_from_store(from).await,
        }
    }

    /// Reads the revocations recorded by a transaction that had not ended at `since` (every live
    /// one if `None`, or if the database server is not the one `since` was taken on) a page at a
    /// time, so that a load of every live revocation holds one page of rows in memory at most,
    /// not all of them. Once done, the view holds every revocation recorded by a transaction
    /// that had ended when the read began, and the next read starts there.
    async fn absorb_from_store(&self, since: Option<store::revocations::Horizon>) -> Result<usize> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        // Before the rows: whatever this read cannot see was recorded by a transaction that had
        // not ended at the horizon.
        let horizon = store::revocations::horizon(&mut conn).await?;
        let since = match since {
            Some(since) if !since.continues_into(&horizon) => {
                tracing::info!(
                    "the database server is not the one last read (restarted or failed over); re-reading every live revocation"
                );
                None
            }
            since => since,
        };
        let mut fresh = 0;
        let mut last_id = 0;
        loop {
            let rows = store::revocations::recorded_since(&mut conn, since.as_ref(), now, last_id, LOAD_PAGE).await?;
            let Some(last) = rows.last() else { break };
            last_id = last.id;
            fresh += rows
                .iter()
                .filter_map(Revocation::from_row)
                .filter(|revocation| self.absorb(revocation))
                .count();
            if (rows.len() as i64) < LOAD_PAGE {
                break;
            }
        }
        drop(conn);
        self.view.prune(now);
        let mut read_from = self.read_from.lock().expect("read_from lock");
        // Of two reads at once, the later horizon (either is safe: both reads are complete); a
        // new server's at once.
        if read_from
            .as_ref()
            .is_none_or(|last| last.server != horizon.server || horizon.first_unassigned >= last.first_unassigned)
        {
            *read_from = Some(horizon);
        }
        Ok(fresh)
    }

    /// Applies one revocation learnt from elsewhere (the feed or Postgres); returns whether it
    /// was new to this replica.
    pub fn absorb(&self, revocation: &Revocation) -> bool {
        let fresh = self.view.apply(revocation);
        if fresh {
            self.forget_cached(revocation);
            self.notify_watchers(revocation);
        }
        fresh
    }

    fn notify_watchers(&self, revocation: &Revocation) {
        self.watchers.notify(revocation);
    }

    fn forget_cached(&self, revocation: &Revocation) {
        for cache in &self.caches {
            cache.forget(revocation);
        }
    }

    /// Applies revocations made here (already committed to Postgres) to this replica, its
    /// watchers, and, through the feed, every other replica.
    pub fn apply(&self, revocations: &[Revocation]) {
        for revocation in revocations {
            if self.view.apply(revocation) {
                self.notify_watchers(revocation);
            }
            self.forget_cached(revocation);
        }
        if self.feed.is_distributed() && !revocations.is_empty() {
            let _ = self.outbox.send(revocations.to_vec());
        }
    }

    /// The receiving end of the outbox; the publisher task takes it once.
    pub(crate) fn take_outbox(&self) -> Option<mpsc::UnboundedReceiver<Vec<Revocation>>> {
        self.outbox_rx.lock().expect("outbox lock").take()
    }

    /// A revocation of `kind` for `subject_id`, made `now`, that lives as long as tokens can.
    pub fn entry(&self, kind: RevocationKind, subject_id: String, user_id: Uuid, now: DateTime<Utc>) -> Revocation {
        Revocation {
            kind,
            subject_id,
            user_id: Some(user_id),
            created_at: now,
            expires_at: now + self.lifetime,
        }
    }

    fn session_entries(&self, sessions: &[Uuid], user_id: Uuid, now: DateTime<Utc>) -> Vec<Revocation> {
        sessions
            .iter()
            .map(|id| self.entry(RevocationKind::Session, id.to_string(), user_id, now))
            .collect()
    }

    /// Records that these sessions (of `user_id`) ended, in the caller's transaction; the caller
    /// applies the result once it commits.
    pub async fn record_sessions_ended(
        &self,
        conn: store::Shared<'_>,
        sessions: &[Uuid],
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> store::StoreResult<Vec<Revocation>> {
        let revocations = self.session_entries(sessions, user_id, now);
        store::revocations::insert_many(conn, &revocations.iter().map(Revocation::to_row).collect::<Vec<_>>()).await?;
        Ok(revocations)
    }

    /// Revokes sessions in Postgres (with their revocation records) and in the view; returns
    /// those that were still live.
    pub async fn end_sessions(&self, session_ids: &[Uuid], user_id: Uuid) -> Result<Vec<Uuid>> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let ids = session_ids.to_vec();
        let revocations = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                let mut ended = Vec::new();
                for id in &ids {
                    if store::sessions::revoke(conn, *id, now).await? {
                        ended.push(*id);
                    }
                }
                self.record_sessions_ended(conn, &ended, user_id, now).await
            })
            .await?;
        self.apply(&revocations);
        Ok(revocations.iter().filter_map(|r| r.subject_id.parse().ok()).collect())
    }

    /// Ends every live session of a user except `keep`; returns how many ended.
    pub async fn revoke_all_sessions(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<usize> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let revocations = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                self.revoke_all_sessions_in(conn, user_id, keep, now).await
            })
            .await?;
        self.apply(&revocations);
        Ok(revocations.len())
    }

    /// The database half of ending a user's sessions, inside the caller's transaction; the caller
    /// applies the returned revocations once it commits.
    pub async fn revoke_all_sessions_in(
        &self,
        conn: &mut Conn<'_>,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> store::StoreResult<Vec<Revocation>> {
        let ended = store::sessions::revoke_all_for_user(conn, user_id, keep, now).await?;
        self.record_sessions_ended(conn, &ended, user_id, now).await
    }

    /// Revokes everything a user holds as of now: every session, every access token issued
    /// before this second, every API key, and every pending one-time link. Used when the account
    /// itself changes hands or standing (password reset, lock, deactivation, role change,
    /// deletion).
    pub async fn revoke_user(&self, user_id: Uuid) -> Result<()> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        let revocations = conn
            .transaction::<_, store::StoreError, _>(async |conn| {
                store::users::lock(conn, user_id).await?;
                self.revoke_user_in(conn, user_id, now).await
            })
            .await?;
        self.apply(&revocations);
        Ok(())
    }

    /// The database half of [`Revoker::revoke_user`], in the caller's transaction (which should
    /// hold the user's row lock); the caller applies the result once it commits.
    pub async fn revoke_user_in(
        &self,
        conn: &mut Conn<'_>,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> store::StoreResult<Vec<Revocation>> {
        // The keys' own rows record their end, so the user-wide entry need only outlive the
        // access tokens (and the replicas' key caches, re-read within a minute): it has an end,
        // and the view and Redis do not grow with every revocation ever made.
        store::api_keys::revoke_all_for_user(conn, user_id, now).await?;
        store::one_time_tokens::retire_unused(conn, user_id, now).await?;
        let user_wide = self.entry(RevocationKind::User, user_id.to_string(), user_id, now);
        let mut revocations = self.revoke_all_sessions_in(conn, user_id, None, now).await?;
        store::revocations::insert_many(conn, &[user_wide.to_row()]).await?;
        revocations.push(user_wide);
        Ok(revocations)
    }

    /// Revokes a key of `owner`; `NotFound` when `owner` has no such key.
    pub async fn revoke_api_key(&self, owner: Uuid, id: Uuid) -> Result<()> {
        let now = self.clock.now();
        let mut conn = store::conn(&self.pool).await?;
        match store::api_keys::revoke(&mut conn, id, owner, now).await? {
            Some(row) => {
                // The row itself is the durable record; the entry feeds the other replicas' views.
                let revocation = self.entry(RevocationKind::ApiKey, row.id.to_string(), row.user_id, now);
                store::revocations::insert_many(&conn, &[revocation.to_row()]).await?;
                self.apply(&[revocation]);
                Ok(())
            }
            None => match store::api_keys::find_for_user(&mut conn, id, owner).await? {
                Some(_) => Ok(()), // already revoked: revoking is idempotent
                None => Err(Error::NotFound("api key")),
            },
        }
    }

    /// Revokes one access token (by its `jti`) until it could no longer be presented anyway.
    /// Another replica may have recorded it already: then that one spreads it.
    pub async fn revoke_access_token(&self, jti: &str, owner: Uuid, exp: i64, now: DateTime<Utc>) -> Result<()> {
        let expires_at = DateTime::from_timestamp(exp + authd_client::verify::LEEWAY_SECS + 60, 0).unwrap_or(now);
        let revocation = Revocation {
            kind: RevocationKind::Token,
            subject_id: jti.to_string(),
            user_id: Some(owner),
            created_at: now,
            expires_at,
        };
        let mut conn = store::conn(&self.pool).await?;
        if store::revocations::insert_once(&mut conn, &revocation.to_row()).await? {
            self.apply(&[revocation]);
        }
        Ok(())
    }
}
