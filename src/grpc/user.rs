use super::convert;
use super::request::{bearer, client_info};
use crate::app::App;
use crate::audit::Event;
use crate::error::Error;
use crate::proto::user_service_server::UserService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.UserService`.
pub struct UserApi {
    app: Arc<App>,
}

impl UserApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn user(&self, row: &crate::store::users::UserRow) -> User {
        convert::user(row, self.app.clock.now())
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_me(&self, request: Request<GetMeRequest>) -> Reply<GetMeResponse> {
        let caller = self.app.authenticate(bearer(request.metadata())).await?;
        let user = self.app.get_me(&caller).await?;
        Ok(Response::new(GetMeResponse {
            user: Some(convert::user(&user, self.app.clock.now())),
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
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let client = client_info(&self.app, &request);
        let req = request.into_inner();
        if let Some(email) = req.email.as_deref() {
            self.app
                .enforce_for(
                    crate::ratelimit::PASSWORD_CHECK_PER_ACCOUNT,
                    &caller.user_id.to_string(),
                    Some(caller.user_id),
                    &client,
                )
                .await?;
            let requested = self
                .app
                .request_email_change(&caller, email, req.current_password.as_deref())
                .await;
            let event = match &requested {
                Ok(()) => Event::success("email.change_requested"),
                Err(_) => Event::failure("email.change_requested"),
            };
            self.app
                .audit_log
                .record(event.user(caller.user_id).client(&client))
                .await;
            requested?;
        }
        let user = self.app.update_me(&caller, req.username.as_deref()).await?;
        Ok(Response::new(UpdateMeResponse {
            user: Some(convert::user(&user, self.app.clock.now())),
        }))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Reply<ListUsersResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let req = request.into_inner();
        let (users, next_page_token) = self
            .app
            .list_users(&caller, req.page_size, &req.page_token, &req.query)
            .await?;
        Ok(Response::new(ListUsersResponse {
            users: users.iter().map(|u| self.user(u)).collect(),
            next_page_token,
        }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Reply<GetUserResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let user = self.app.get_user(&caller, &request.get_ref().user_id).await?;
        Ok(Response::new(GetUserResponse {
            user: Some(self.user(&user)),
        }))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Reply<UpdateUserResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let client = client_info(&self.app, &request);
        let req = request.into_inner();
        let roles = req.roles.map(|r| r.roles);
        let user = self
            .app
            .update_user(&caller, &req.user_id, roles.as_deref(), req.active)
            .await?;
        if roles.is_some() {
            let event = Event::success("user.roles_changed")
                .user(user.id)
                .client(&client)
                .detail("by", caller.user_id.to_string());
            self.app
                .audit_log
                .record(event.detail("roles", user.roles.clone()))
                .await;
        }
        if let Some(active) = req.active {
            let kind = if active { "user.activated" } else { "user.deactivated" };
            self.app
                .audit_log
                .record(
                    Event::success(kind)
                        .user(user.id)
                        .client(&client)
                        .detail("by", caller.user_id.to_string()),
                )
                .await;
        }
        Ok(Response::new(UpdateUserResponse {
            user: Some(self.user(&user)),
        }))
    }

    async fn lock_user(&self, request: Request<LockUserRequest>) -> Reply<LockUserResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let client = client_info(&self.app, &request);
        let req = request.into_inner();
        let duration = match &req.duration {
            Some(d) => Some(convert::from_duration(d).ok_or(Error::invalid("duration", "must be positive"))?),
            None => None,
        };
        let user = self.app.lock_user(&caller, &req.user_id, duration).await?;
        let event = Event::success("user.locked")
            .user(user.id)
            .client(&client)
            .detail("by", caller.user_id.to_string());
        let reason: String = req.reason.chars().take(200).collect();
        self.app.audit_log.record(event.detail("reason", reason)).await;
        Ok(Response::new(LockUserResponse {
            user: Some(self.user(&user)),
        }))
    }

    async fn unlock_user(&self, request: Request<UnlockUserRequest>) -> Reply<UnlockUserResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let user = self.app.unlock_user(&caller, &request.get_ref().user_id).await?;
        let event = Event::success("user.unlocked")
            .user(user.id)
            .client(&client_info(&self.app, &request));
        self.app
            .audit_log
            .record(event.detail("by", caller.user_id.to_string()))
            .await;
        Ok(Response::new(UnlockUserResponse {
            user: Some(self.user(&user)),
        }))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Reply<DeleteUserResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        self.app.delete_user(&caller, &request.get_ref().user_id).await?;
        let target = crate::domain::parse_id(&request.get_ref().user_id, "user_id")?;
        let event = Event::success("user.deleted")
            .user(target)
            .client(&client_info(&self.app, &request));
        self.app
            .audit_log
            .record(event.detail("by", caller.user_id.to_string()))
            .await;
        Ok(Response::new(DeleteUserResponse {}))
    }
}
