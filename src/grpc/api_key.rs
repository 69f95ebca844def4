use super::convert;
use super::request::{caller, client};
use crate::api_keys::ApiKeys;
use crate::error::Error;
use crate::proto::api_key_service_server::ApiKeyService;
use crate::proto::*;
use crate::ratelimit::Limits;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.ApiKeyService`.
pub struct ApiKeyApi {
    api_keys: Arc<ApiKeys>,
    limits: Arc<Limits>,
}

impl ApiKeyApi {
    pub fn new(api_keys: Arc<ApiKeys>, limits: Arc<Limits>) -> Self {
        Self { api_keys, limits }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ApiKeyService for ApiKeyApi {
    async fn create_api_key(&self, request: Request<CreateApiKeyRequest>) -> Reply<CreateApiKeyResponse> {
        super::bounds::check(&[("label", &request.get_ref().label, super::bounds::LABEL)])?;
        super::bounds::check_scopes(&request.get_ref().scopes)?;
        let caller = caller(&request)?;
        let client = client(&request);
        self.limits
            .enforce_for(
                crate::ratelimit::API_KEY_CREATE_PER_ACCOUNT,
                &caller.user_id.to_string(),
                Some(caller.user_id),
                &client,
            )
            .await?;
        let req = request.get_ref();
        let expires_at = match &req.expires_at {
            Some(ts) => Some(convert::from_timestamp(ts).ok_or(Error::invalid("expires_at", "is out of range"))?),
            None => None,
        };
        let issued = self
            .api_keys
            .create_api_key(caller, &req.label, &req.scopes, expires_at, &client)
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(convert::api_key(&issued.key)),
            secret: issued.secret.expose().clone(),
        }))
    }

    async fn list_api_keys(&self, request: Request<ListApiKeysRequest>) -> Reply<ListApiKeysResponse> {
        let keys = self.api_keys.list_api_keys(caller(&request)?).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.iter().map(convert::api_key).collect(),
        }))
    }

    async fn revoke_api_key(&self, request: Request<RevokeApiKeyRequest>) -> Reply<RevokeApiKeyResponse> {
        self.api_keys
            .revoke_api_key(caller(&request)?, &request.get_ref().id, &client(&request))
            .await?;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }

    async fn rotate_api_key(&self, request: Request<RotateApiKeyRequest>) -> Reply<RotateApiKeyResponse> {
        let req = request.get_ref();
        let grace = match &req.grace_period {
            Some(d) => convert::from_duration(d).ok_or(Error::invalid("grace_period", "must not be negative"))?,
            None => std::time::Duration::ZERO,
        };
        let issued = self
            .api_keys
            .rotate_api_key(caller(&request)?, &req.id, grace, &client(&request))
            .await?;
        Ok(Response::new(RotateApiKeyResponse {
            api_key: Some(convert::api_key(&issued.key)),
            secret: issued.secret.expose().clone(),
        }))
    }
}
