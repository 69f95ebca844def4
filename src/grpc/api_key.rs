use super::convert;
use super::request::{bearer, client_info};
use crate::app::App;
use crate::audit::Event;
use crate::error::Error;
use crate::proto::api_key_service_server::ApiKeyService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.ApiKeyService`.
pub struct ApiKeyApi {
    app: Arc<App>,
}

impl ApiKeyApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ApiKeyService for ApiKeyApi {
    async fn create_api_key(&self, request: Request<CreateApiKeyRequest>) -> Reply<CreateApiKeyResponse> {
        super::bounds::check(&[("label", &request.get_ref().label, super::bounds::LABEL)])?;
        super::bounds::check_scopes(&request.get_ref().scopes)?;
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let client = client_info(&self.app, &request);
        self.app
            .enforce_for(
                crate::ratelimit::API_KEY_CREATE_PER_ACCOUNT,
                &caller.user_id.to_string(),
                Some(caller.user_id),
                &client,
            )
            .await?;
        let req = request.into_inner();
        let expires_at = match &req.expires_at {
            Some(ts) => Some(convert::from_timestamp(ts).ok_or(Error::invalid("expires_at", "is out of range"))?),
            None => None,
        };
        let issued = self
            .app
            .create_api_key(&caller, &req.label, &req.scopes, expires_at)
            .await?;
        let event = Event::success("api_key.created").user(caller.user_id).client(&client);
        self.app
            .audit_log
            .record(
                event
                    .detail("api_key_id", issued.key.id.to_string())
                    .detail("scopes", issued.key.scopes.clone()),
            )
            .await;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(convert::api_key(&issued.key)),
            secret: issued.secret.expose().clone(),
        }))
    }

    async fn list_api_keys(&self, request: Request<ListApiKeysRequest>) -> Reply<ListApiKeysResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let keys = self.app.list_api_keys(&caller).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.iter().map(convert::api_key).collect(),
        }))
    }

    async fn revoke_api_key(&self, request: Request<RevokeApiKeyRequest>) -> Reply<RevokeApiKeyResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        self.app.revoke_api_key(&caller, &request.get_ref().id).await?;
        let event = Event::success("api_key.revoked")
            .user(caller.user_id)
            .client(&client_info(&self.app, &request));
        self.app
            .audit_log
            .record(event.detail("api_key_id", request.get_ref().id.clone()))
            .await;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }

    async fn rotate_api_key(&self, request: Request<RotateApiKeyRequest>) -> Reply<RotateApiKeyResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let client = client_info(&self.app, &request);
        let req = request.into_inner();
        let grace = match &req.grace_period {
            Some(d) => convert::from_duration(d).ok_or(Error::invalid("grace_period", "must not be negative"))?,
            None => std::time::Duration::ZERO,
        };
        let issued = self.app.rotate_api_key(&caller, &req.id, grace).await?;
        let event = Event::success("api_key.rotated").user(caller.user_id).client(&client);
        self.app
            .audit_log
            .record(event.detail("api_key_id", issued.key.id.to_string()))
            .await;
        Ok(Response::new(RotateApiKeyResponse {
            api_key: Some(convert::api_key(&issued.key)),
            secret: issued.secret.expose().clone(),
        }))
    }
}
