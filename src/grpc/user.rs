use super::convert;
use super::request::{caller, client};
use crate::accounts::Accounts;
use crate::clock::Clock;
use crate::error::Error;
use crate::proto::user_service_server::UserService;
use crate::proto::*;
use crate::ratelimit::Limits;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.UserService`.
pub struct UserApi {
    accounts: Arc<Accounts>,
    limits: Arc<Limits>,
    clock: Clock,
}

impl UserApi {
    pub fn new(accounts: Arc<Accounts>, limits: Arc<Limits>, clock: Clock) -> Self {
        Self {
            accounts,
            limits,
            clock,
        }
    }

    async fn user(&self, row: &crate::store::users::UserRow) -> Result<User, Status> {
        Ok(convert::linked_user(&self.accounts, row, self.clock.now()).await?)
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_me(&self, request: Request<GetMeRequest>) -> Reply<GetMeResponse> {
        let user = self.accounts.get_me(caller(&request)?).await?;
        Ok(Response::new(GetMeResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn update_me(&self, request: Request<UpdateMeRequest>) -> Reply<UpdateMeResponse> {
        let req = request.get_ref();
        super::bounds::check(&[
            (
                "username",
                req.username.as_deref().unwrap_or_default(),
                super::bounds::USERNAME,
            ),
            ("email", req.email.as_deref().unwrap_or_default(), super::bounds::EMAIL),
            (
                "current_password",
                req.current_password.as_deref().unwrap_or_default(),
                super::bounds::PASSWORD,
            ),
        ])?;
        let caller = caller(&request)?;
        let client = client(&request);
        if let Some(email) = req.email.as_deref() {
            self.limits
                .enforce_for(
                    crate::ratelimit::PASSWORD_CHECK_PER_ACCOUNT,
                    &caller.user_id.to_string(),
                    Some(caller.user_id),
                    &client,
                )
                .await?;
            self.accounts
                .request_email_change(caller, email, req.current_password.as_deref(), &client)
                .await?;
        }
        let user = self.accounts.update_me(caller, req.username.as_deref()).await?;
        Ok(Response::new(UpdateMeResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Reply<ListUsersResponse> {
        let req = request.get_ref();
        let (users, next_page_token) = self
            .accounts
            .list_users(caller(&request)?, req.page_size, &req.page_token, &req.query)
            .await?;
        Ok(Response::new(ListUsersResponse {
            users: convert::users(&self.accounts, &users, self.clock.now()).await?,
            next_page_token,
        }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Reply<GetUserResponse> {
        let user = self
            .accounts
            .get_user(caller(&request)?, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(GetUserResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Reply<UpdateUserResponse> {
        let req = request.get_ref();
        let roles = req.roles.as_ref().map(|r| r.roles.as_slice());
        let user = self
            .accounts
            .update_user(caller(&request)?, &req.user_id, roles, req.active, &client(&request))
            .await?;
        Ok(Response::new(UpdateUserResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn lock_user(&self, request: Request<LockUserRequest>) -> Reply<LockUserResponse> {
        let req = request.get_ref();
        let duration = match &req.duration {
            Some(d) => Some(convert::from_duration(d).ok_or(Error::invalid("duration", "must be positive"))?),
            None => None,
        };
        let user = self
            .accounts
            .lock_user(
                caller(&request)?,
                &req.user_id,
                duration,
                &req.reason,
                &client(&request),
            )
            .await?;
        Ok(Response::new(LockUserResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn unlock_user(&self, request: Request<UnlockUserRequest>) -> Reply<UnlockUserResponse> {
        let user = self
            .accounts
            .unlock_user(caller(&request)?, &request.get_ref().user_id, &client(&request))
            .await?;
        Ok(Response::new(UnlockUserResponse {
            user: Some(self.user(&user).await?),
        }))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Reply<DeleteUserResponse> {
        self.accounts
            .delete_user(caller(&request)?, &request.get_ref().user_id, &client(&request))
            .await?;
        Ok(Response::new(DeleteUserResponse {}))
    }
}
