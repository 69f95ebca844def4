use super::convert;
use super::request::{bearer, client_info};
use crate::app::App;
use crate::audit::Event;
use crate::proto::session_service_server::SessionService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.SessionService`.
pub struct SessionApi {
    app: Arc<App>,
}

impl SessionApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn list_sessions(&self, request: Request<ListSessionsRequest>) -> Reply<ListSessionsResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let sessions = self.app.list_sessions(&caller).await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions
                .iter()
                .map(|s| convert::session(s, caller.session_id()))
                .collect(),
        }))
    }

    async fn revoke_session(&self, request: Request<RevokeSessionRequest>) -> Reply<RevokeSessionResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        self.app.revoke_session(&caller, &request.get_ref().session_id).await?;
        let event = Event::success("session.revoked")
            .user(caller.user_id)
            .client(&client_info(&self.app, &request));
        self.app
            .audit_log
            .record(event.detail("session_id", request.get_ref().session_id.clone()))
            .await;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    async fn revoke_all_sessions(
        &self,
        request: Request<RevokeAllSessionsRequest>,
    ) -> Reply<RevokeAllSessionsResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let keep = if request.get_ref().keep_current {
            caller.session_id()
        } else {
            None
        };
        let revoked = self.app.revoke_all_sessions(caller.user_id, keep).await?;
        let event = Event::success("session.revoked")
            .user(caller.user_id)
            .client(&client_info(&self.app, &request));
        self.app
            .audit_log
            .record(event.detail("all", true).detail("count", revoked))
            .await;
        Ok(Response::new(RevokeAllSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }
}
