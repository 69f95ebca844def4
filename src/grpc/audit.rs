use super::request::bearer;
use crate::app::App;
use crate::error::Error;
use crate::proto::audit_service_server::AuditService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.AuditService`.
pub struct AuditApi {
    app: Arc<App>,
}

impl AuditApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        self.app.authenticate(bearer(request.metadata())).await?;
        Err(Error::Unimplemented("ListAuditEvents").into())
    }
}
