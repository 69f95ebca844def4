use super::convert;
use super::request::{caller, client};
use crate::proto::session_service_server::SessionService;
use crate::proto::*;
use crate::sessions::Sessions;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.SessionService`.
pub struct SessionApi {
    sessions: Arc<Sessions>,
}

impl SessionApi {
    pub fn new(sessions: Arc<Sessions>) -> Self {
        Self { sessions }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn list_sessions(&self, request: Request<ListSessionsRequest>) -> Reply<ListSessionsResponse> {
        let caller = caller(&request)?;
        let sessions = self.sessions.list_sessions(caller).await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions
                .iter()
                .map(|s| convert::session(s, caller.session_id()))
                .collect(),
        }))
    }

    async fn revoke_session(&self, request: Request<RevokeSessionRequest>) -> Reply<RevokeSessionResponse> {
        self.sessions
            .revoke_session(caller(&request)?, &request.get_ref().session_id, &client(&request))
            .await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    async fn revoke_all_sessions(
        &self,
        request: Request<RevokeAllSessionsRequest>,
    ) -> Reply<RevokeAllSessionsResponse> {
        let revoked = self
            .sessions
            .revoke_all(caller(&request)?, request.get_ref().keep_current, &client(&request))
            .await?;
        Ok(Response::new(RevokeAllSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }
}
