//! The audit trail: who did what, from where, and how it went. Recording is best effort (a
//! failure is logged, the call goes on), except for a sign-in's `login.succeeded` and
//! `login.new_device`, written in the transaction that opens its session, and a burst of failed
//! logins, written in the transaction that decides it; nothing secret is ever recorded.

pub mod export;
mod refusals;

pub use refusals::Refusals;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::identity::Caller;
use crate::identity::ClientInfo;
use crate::store::{self, Pool, audit::AuditFilter, audit::AuditRow};
use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde_json::{Value, json};
use uuid::Uuid;

/// One event about to be recorded.
#[derive(Debug)]
pub struct Event {
    kind: &'static str,
    user_id: Option<Uuid>,
    success: bool,
    client: ClientInfo,
    details: Value,
}

impl Event {
    pub fn success(kind: &'static str) -> Self {
        Self {
            kind,
            user_id: None,
            success: true,
            client: ClientInfo::default(),
            details: json!({}),
        }
    }

    pub fn failure(kind: &'static str) -> Self {
        Self {
            success: false,
            ..Self::success(kind)
        }
    }

    pub fn user(mut self, id: Uuid) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn client(mut self, client: &ClientInfo) -> Self {
        self.client = client.clone();
        self
    }

    /// Facts about the event (reasons, ids); never a secret.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details[key] = value.into();
        self
    }
}

/// The audit trail: records events (best effort), summarises rate-limit refusals, and lists
/// events for their owners and for administrators. Holds only the pool and the clock.
pub struct AuditLog {
    pool: Pool,
    clock: Clock,
    /// Rate-limit refusals not yet written.
    refusals: Refusals,
    /// `authd.audit.suspicious`, by `kind`.
    suspicious: Counter<u64>,
}

impl AuditLog {
    pub fn new(pool: Pool, clock: Clock, suspicious: Counter<u64>) -> Self {
        Self {
            pool,
            clock,
            refusals: Refusals::default(),
            suspicious,
        }
    }

    /// Records a `suspicious.*` event (best effort) and counts it.
    pub async fn flag(&self, event: Event) {
        let kind = event.kind;
        if self.record(event).await {
            self.flagged(kind);
        }
    }

    /// Counts a `suspicious.*` event written by a caller's transaction, once it committed; the
    /// operator's log says so too (without the event's facts, which are in the trail).
    pub(crate) fn flagged(&self, kind: &'static str) {
        debug_assert!(kind.starts_with("suspicious."));
        tracing::warn!(kind, "suspicious activity recorded in the audit trail");
        self.suspicious.add(1, &[KeyValue::new("kind", kind)]);
    }

    /// Counts a refused call, for the next summary.
    pub fn note_refusal(&self, limit: &'static str, subject: &str, user_id: Option<Uuid>, client: &ClientInfo) {
        self.refusals.note(limit, subject, user_id, client, self.clock.now());
    }

    /// Records one event; a failure is logged and the call goes on. Whether it was written.
    pub async fn record(&self, event: Event) -> bool {
        let kind = event.kind;
        let row = self.row(event);
        let result = async {
            let conn = store::conn(&self.pool).await?;
            store::audit::insert(&conn, &row).await
        }
        .await;
        if let Err(e) = &result {
            tracing::warn!(kind, error = %e, "could not record an audit event");
        }
        result.is_ok()
    }

    /// The row an event is recorded as, for a caller that writes it in a transaction of its
    /// own (then it is not best effort: it fails with the transaction).
    pub(crate) fn row(&self, event: Event) -> AuditRow {
        AuditRow {
            id: 0,
            event_type: event.kind.to_string(),
            user_id: event.user_id,
            occurred_at: self.clock.now(),
            ip_address: event.client.ip_address,
            user_agent: event.client.user_agent,
            outcome: if event.success { "success" } else { "failure" }.to_string(),
            details: event.details.to_string(),
        }
    }

    /// Records the rate-limit refusals counted since the last call: one `rate_limit.hit` event
    /// per limit and subject, with how many calls were refused and over what span, written in
    /// batches.
    pub async fn flush_refusals(&self) {
        let rows: Vec<AuditRow> = self
            .refusals
            .take()
            .into_iter()
            .map(|summary| {
                let mut event = Event::failure("rate_limit.hit")
                    .client(&summary.client)
                    .detail("limit", summary.limit)
                    .detail("refused", summary.count)
                    .detail("first_at", summary.first_at.to_rfc3339())
                    .detail("last_at", summary.last_at.to_rfc3339());
                if let Some(user_id) = summary.user_id {
                    event = event.user(user_id);
                }
                self.row(event)
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let result = async {
            let mut conn = store::conn(&self.pool).await?;
            store::audit::insert_many(&mut conn, &rows).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, count = rows.len(), "could not record rate-limit refusals");
        }
    }

    /// Events newest first. Administrators see anyone's (all, or `user_id`'s); others their own.
    #[allow(clippy::too_many_arguments)]
    pub async fn list(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
        user_id: &str,
        event_type: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<(Vec<AuditRow>, String)> {
        let requested = match user_id.trim() {
            "" => None,
            id => Some(crate::domain::UserId::parse(id)?.uuid()),
        };
        let user_id = if caller.is_admin() {
            requested
        } else {
            match requested {
                Some(id) if id != caller.user_id => {
                    return Err(Error::denied("only administrators see other users' events"));
                }
                _ => Some(caller.user_id),
            }
        };
        let page = crate::domain::Page::<i64>::parse(page_size, page_token)?;
        let event_type = Some(event_type.trim()).filter(|t| !t.is_empty());
        let filter = AuditFilter {
            user_id,
            event_type,
            since,
            until,
            before_id: page.after,
        };
        let mut conn = store::conn(&self.pool).await?;
        let rows = store::audit::list(&mut conn, &filter, page.fetch()).await?;
        Ok(page.finish(rows, |r| r.id.to_string()))
    }
}
