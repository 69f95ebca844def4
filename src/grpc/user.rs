use super::convert;
use super::request::bearer;
use crate::app::App;
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

    /// Administrative RPCs: authenticated, then refused to everyone but admins until implemented.
    async fn admin_only<T>(&self, request: &Request<T>, what: &'static str) -> Result<(), Status> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        if !caller.is_admin() {
            return Err(Error::PermissionDenied("role admin required").into());
        }
        Err(Error::Unimplemented(what).into())
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
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let req = request.into_inner();
        if let Some(email) = req.email.as_deref() {
            self.app.request_email_change(&caller, email).await?;
        }
        let user = self.app.update_me(&caller, req.username.as_deref()).await?;
        Ok(Response::new(UpdateMeResponse {
            user: Some(convert::user(&user, self.app.clock.now())),
        }))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Reply<ListUsersResponse> {
        self.admin_only(&request, "ListUsers").await.map(|_| unreachable!())
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Reply<GetUserResponse> {
        self.admin_only(&request, "GetUser").await.map(|_| unreachable!())
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Reply<UpdateUserResponse> {
        self.admin_only(&request, "UpdateUser").await.map(|_| unreachable!())
    }

    async fn lock_user(&self, request: Request<LockUserRequest>) -> Reply<LockUserResponse> {
        self.admin_only(&request, "LockUser").await.map(|_| unreachable!())
    }

    async fn unlock_user(&self, request: Request<UnlockUserRequest>) -> Reply<UnlockUserResponse> {
        self.admin_only(&request, "UnlockUser").await.map(|_| unreachable!())
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Reply<DeleteUserResponse> {
        self.admin_only(&request, "DeleteUser").await.map(|_| unreachable!())
    }
}
