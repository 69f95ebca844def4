use super::convert;
use super::request::{bearer, client_info};
use crate::app::App;
use crate::error::Error;
use crate::proto::auth_service_server::AuthService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.AuthService`.
pub struct AuthApi {
    app: Arc<App>,
}

impl AuthApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn later<T>(what: &'static str) -> Reply<T> {
    Err(Error::Unimplemented(what).into())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<RegisterRequest>) -> Reply<RegisterResponse> {
        let req = request.into_inner();
        let user = self.app.register(&req.email, &req.username, &req.password).await?;
        Ok(Response::new(RegisterResponse {
            user: Some(convert::user(&user, self.app.clock.now())),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Reply<LoginResponse> {
        let client = client_info(&request);
        let req = request.into_inner();
        let done = self
            .app
            .login(&req.identifier, &req.password, req.device_name.as_deref(), &client)
            .await?;
        Ok(Response::new(LoginResponse {
            user: Some(convert::user(&done.user, self.app.clock.now())),
            tokens: Some(convert::tokens(done.tokens)),
        }))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Reply<RefreshResponse> {
        let tokens = self.app.refresh(&request.into_inner().refresh_token).await?;
        Ok(Response::new(RefreshResponse {
            tokens: Some(convert::tokens(tokens)),
        }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Reply<LogoutResponse> {
        let caller = match bearer(request.metadata()) {
            Some(token) if request.get_ref().refresh_token.trim().is_empty() => {
                Some(self.app.authenticate(Some(token)).await?)
            }
            _ => None,
        };
        self.app
            .logout(Some(&request.get_ref().refresh_token), caller.as_ref())
            .await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn change_password(&self, request: Request<ChangePasswordRequest>) -> Reply<ChangePasswordResponse> {
        let caller = self.app.authenticate_user(bearer(request.metadata())).await?;
        let req = request.into_inner();
        self.app
            .change_password(&caller, &req.current_password, &req.new_password)
            .await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }

    async fn request_password_reset(
        &self,
        _: Request<RequestPasswordResetRequest>,
    ) -> Reply<RequestPasswordResetResponse> {
        later("RequestPasswordReset")
    }

    async fn reset_password(&self, _: Request<ResetPasswordRequest>) -> Reply<ResetPasswordResponse> {
        later("ResetPassword")
    }

    async fn send_verification_email(
        &self,
        _: Request<SendVerificationEmailRequest>,
    ) -> Reply<SendVerificationEmailResponse> {
        later("SendVerificationEmail")
    }

    async fn verify_email(&self, _: Request<VerifyEmailRequest>) -> Reply<VerifyEmailResponse> {
        later("VerifyEmail")
    }

    async fn request_account_deletion(
        &self,
        _: Request<RequestAccountDeletionRequest>,
    ) -> Reply<RequestAccountDeletionResponse> {
        later("RequestAccountDeletion")
    }

    async fn confirm_account_deletion(
        &self,
        _: Request<ConfirmAccountDeletionRequest>,
    ) -> Reply<ConfirmAccountDeletionResponse> {
        later("ConfirmAccountDeletion")
    }

    async fn cancel_account_deletion(
        &self,
        _: Request<CancelAccountDeletionRequest>,
    ) -> Reply<CancelAccountDeletionResponse> {
        later("CancelAccountDeletion")
    }

    async fn get_account_deletion_status(
        &self,
        _: Request<GetAccountDeletionStatusRequest>,
    ) -> Reply<GetAccountDeletionStatusResponse> {
        later("GetAccountDeletionStatus")
    }

    async fn list_providers(&self, _: Request<ListProvidersRequest>) -> Reply<ListProvidersResponse> {
        // No federated identity providers can be configured yet: the list is truthfully empty.
        Ok(Response::new(ListProvidersResponse { providers: Vec::new() }))
    }

    async fn login_with_provider(&self, _: Request<LoginWithProviderRequest>) -> Reply<LoginWithProviderResponse> {
        later("LoginWithProvider")
    }
}
