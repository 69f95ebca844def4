use super::convert;
use super::request::caller;
use crate::audit::AuditLog;
use crate::error::Error;
use crate::proto::audit_service_server::AuditService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.AuditService`.
pub struct AuditApi {
    audit_log: Arc<AuditLog>,
}

impl AuditApi {
    pub fn new(audit_log: Arc<AuditLog>) -> Self {
        Self { audit_log }
    }
}

fn instant(
    ts: &Option<prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    match ts {
        Some(ts) => Ok(Some(
            convert::from_timestamp(ts).ok_or(Error::invalid(field, "is out of range"))?,
        )),
        None => Ok(None),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let req = request.get_ref();
        super::bounds::check(&[
            ("page_token", &req.page_token, super::bounds::SHORT),
            ("user_id", &req.user_id, super::bounds::SHORT),
            ("type", &req.r#type, super::bounds::SHORT),
        ])?;
        let caller = caller(&request)?;
        let (since, until) = (instant(&req.since, "since")?, instant(&req.until, "until")?);
        let (rows, next_page_token) = self
            .audit_log
            .list(
                caller,
                req.page_size,
                &req.page_token,
                &req.user_id,
                &req.r#type,
                since,
                until,
            )
            .await?;
        Ok(Response::new(ListAuditEventsResponse {
            events: rows
                .into_iter()
                .map(|row| AuditEvent {
                    id: row.id.to_string(),
                    r#type: row.event_type,
                    user_id: row.user_id.map(|id| id.to_string()).unwrap_or_default(),
                    occurred_at: Some(convert::timestamp(row.occurred_at)),
                    ip_address: row.ip_address.unwrap_or_default(),
                    user_agent: row.user_agent.unwrap_or_default(),
                    outcome: row.outcome,
                    details: row.details,
                })
                .collect(),
            next_page_token,
        }))
    }
}
