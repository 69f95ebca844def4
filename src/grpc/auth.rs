use super::bounds;
use super::convert;
use super::request::{caller, client, optional_caller};
use crate::accounts::{Accounts, DeletionState};
use crate::clock::Clock;
use crate::error::Error;
use crate::identity::ClientInfo;
use crate::proto::auth_service_server::AuthService;
use crate::proto::*;
use crate::providers::Providers;
use crate::ratelimit::{self, Limits};
use crate::sessions::Sessions;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `auth.v1.AuthService`.
pub struct AuthApi {
    accounts: Arc<Accounts>,
    sessions: Arc<Sessions>,
    providers: Arc<Providers>,
    limits: Arc<Limits>,
    clock: Clock,
}

impl AuthApi {
    pub fn new(
        accounts: Arc<Accounts>,
        sessions: Arc<Sessions>,
        providers: Arc<Providers>,
        limits: Arc<Limits>,
        clock: Clock,
    ) -> Self {
        Self {
            accounts,
            sessions,
            providers,
            limits,
            clock,
        }
    }

    /// The per-address limit of the RPCs that send mail, after the address's length bound.
    async fn limit_mail<T>(&self, request: &Request<T>, email: &str) -> Result<(), Status> {
        bounds::check(&[("email", email, bounds::EMAIL)])?;
        self.limit_address(ratelimit::MAIL_PER_ADDRESS, request).await
    }

    /// The per-address limit of the RPCs that spend a mailed token, after the token's bound.
    async fn limit_token<T>(&self, request: &Request<T>, token: &str) -> Result<(), Status> {
        bounds::check(&[("token", token, bounds::OPAQUE_TOKEN)])?;
        self.limit_address(ratelimit::TOKEN_PER_ADDRESS, request).await
    }

    async fn limit_address<T>(&self, limit: ratelimit::Limit, request: &Request<T>) -> Result<(), Status> {
        let client = client(request);
        Ok(self.limits.enforce(limit, &address(&client), &client).await?)
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl AuthApi {
    /// What both provider RPCs begin with: the bounds (and those of one more field), the
    /// per-address limit, the provider, and the verified claims of its ID token (a refused token
    /// is audited).
    async fn provider_claims(
        &self,
        client: &ClientInfo,
        provider: &str,
        id_token: &str,
        nonce: Option<&str>,
        (field, value, max): (&'static str, Option<&str>, usize),
    ) -> Result<(Arc<crate::providers::Provider>, authd_client::id_token::IdClaims), Status> {
        bounds::check(&[
            ("provider", provider, bounds::LABEL),
            ("id_token", id_token, bounds::ID_TOKEN),
            (field, value.unwrap_or_default(), max),
        ])?;
        self.limits
            .enforce(ratelimit::PROVIDER_LOGIN_PER_ADDRESS, &address(client), client)
            .await?;
        let provider = self.providers.get(provider.trim())?;
        if nonce.is_some_and(|n| n.trim().is_empty() || n.len() > 512) {
            return Err(Error::invalid("nonce", "must be the nonce the sign-in was started with, or unset").into());
        }
        match self
            .providers
            .verify(&provider, id_token.trim(), nonce, self.clock.now())
            .await
        {
            Err(Error::Unauthenticated) => {
                self.accounts.provider_token_refused(&provider.settings, client).await;
                Err(Error::Unauthenticated.into())
            }
            Ok(claims) => Ok((provider, claims)),
            Err(e) => Err(e.into()),
        }
    }
}

/// The subject of per-address limits (IPv6 clients by their /64).
fn address(client: &ClientInfo) -> String {
    crate::net::address_bucket(client.ip_address.as_deref())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<RegisterRequest>) -> Reply<RegisterResponse> {
        let req = request.get_ref();
        bounds::check(&[
            ("email", &req.email, bounds::EMAIL),
            ("username", &req.username, bounds::USERNAME),
            ("password", &req.password, bounds::PASSWORD),
        ])?;
        let client = client(&request);
        self.limits
            .enforce(ratelimit::REGISTER_PER_ADDRESS, &address(&client), &client)
            .await?;
        let req = request.into_inner();
        let user = self
            .accounts
            .register(&req.email, &req.username, &req.password, &client)
            .await?;
        Ok(Response::new(RegisterResponse {
            user: Some(convert::user(&user, self.clock.now())),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Reply<LoginResponse> {
        let req = request.get_ref();
        bounds::check(&[
            ("identifier", &req.identifier, bounds::IDENTIFIER),
            ("password", &req.password, bounds::PASSWORD),
            (
                "device_name",
                req.device_name.as_deref().unwrap_or_default(),
                bounds::LABEL,
            ),
        ])?;
        let client = client(&request);
        self.limits
            .enforce(ratelimit::LOGIN_PER_ADDRESS, &address(&client), &client)
            .await?;
        let account = crate::domain::normalize_identifier(&request.get_ref().identifier);
        self.limits
            .enforce(ratelimit::LOGIN_PER_ACCOUNT, &account, &client)
            .await?;
        let req = request.into_inner();
        let done = self
            .accounts
            .login(&req.identifier, &req.password, req.device_name.as_deref(), &client)
            .await?;
        Ok(Response::new(LoginResponse {
            user: Some(convert::signed_in_user(&self.accounts, &done, self.clock.now()).await),
            tokens: Some(convert::tokens(done.tokens)),
        }))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Reply<RefreshResponse> {
        bounds::check(&[("refresh_token", &request.get_ref().refresh_token, bounds::OPAQUE_TOKEN)])?;
        let client = client(&request);
        let tokens = self
            .sessions
            .refresh(&request.into_inner().refresh_token, &client)
            .await?;
        Ok(Response::new(RefreshResponse {
            tokens: Some(convert::tokens(tokens)),
        }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Reply<LogoutResponse> {
        bounds::check(&[("refresh_token", &request.get_ref().refresh_token, bounds::OPAQUE_TOKEN)])?;
        let refresh_token = &request.get_ref().refresh_token;
        // A refresh token names the session itself; only without one does the caller's matter.
        let caller = if refresh_token.trim().is_empty() {
            optional_caller(&request).await?
        } else {
            None
        };
        self.sessions
            .logout(Some(refresh_token), caller.as_ref(), &client(&request))
            .await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn change_password(&self, request: Request<ChangePasswordRequest>) -> Reply<ChangePasswordResponse> {
        let req = request.get_ref();
        bounds::check(&[
            ("current_password", &req.current_password, bounds::PASSWORD),
            ("new_password", &req.new_password, bounds::PASSWORD),
        ])?;
        let caller = caller(&request)?;
        let client = client(&request);
        self.limits
            .enforce_for(
                ratelimit::PASSWORD_CHECK_PER_ACCOUNT,
                &caller.user_id.to_string(),
                Some(caller.user_id),
                &client,
            )
            .await?;
        let req = request.get_ref();
        self.accounts
            .change_password(caller, &req.current_password, &req.new_password, &client)
            .await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Reply<RequestPasswordResetResponse> {
        self.limit_mail(&request, &request.get_ref().email).await?;
        self.accounts.request_password_reset(&request.get_ref().email).await?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    async fn reset_password(&self, request: Request<ResetPasswordRequest>) -> Reply<ResetPasswordResponse> {
        bounds::check(&[("new_password", &request.get_ref().new_password, bounds::PASSWORD)])?;
        self.limit_token(&request, &request.get_ref().token).await?;
        let client = client(&request);
        let req = request.into_inner();
        self.accounts
            .reset_password(&req.token, &req.new_password, &client)
            .await?;
        Ok(Response::new(ResetPasswordResponse {}))
    }

    async fn send_verification_email(
        &self,
        request: Request<SendVerificationEmailRequest>,
    ) -> Reply<SendVerificationEmailResponse> {
        self.limit_mail(&request, &request.get_ref().email).await?;
        self.accounts.send_verification_email(&request.get_ref().email).await?;
        Ok(Response::new(SendVerificationEmailResponse {}))
    }

    async fn verify_email(&self, request: Request<VerifyEmailRequest>) -> Reply<VerifyEmailResponse> {
        self.limit_token(&request, &request.get_ref().token).await?;
        self.accounts
            .verify_email(&request.get_ref().token, &client(&request))
            .await?;
        Ok(Response::new(VerifyEmailResponse {}))
    }

    async fn request_account_deletion(
        &self,
        request: Request<RequestAccountDeletionRequest>,
    ) -> Reply<RequestAccountDeletionResponse> {
        self.limit_mail(&request, &request.get_ref().email).await?;
        self.accounts.request_account_deletion(&request.get_ref().email).await?;
        Ok(Response::new(RequestAccountDeletionResponse {}))
    }

    async fn confirm_account_deletion(
        &self,
        request: Request<ConfirmAccountDeletionRequest>,
    ) -> Reply<ConfirmAccountDeletionResponse> {
        self.limit_token(&request, &request.get_ref().token).await?;
        let scheduled_for = self
            .accounts
            .confirm_account_deletion(&request.get_ref().token, &client(&request))
            .await?;
        Ok(Response::new(ConfirmAccountDeletionResponse {
            scheduled_for: Some(convert::timestamp(scheduled_for)),
        }))
    }

    async fn cancel_account_deletion(
        &self,
        request: Request<CancelAccountDeletionRequest>,
    ) -> Reply<CancelAccountDeletionResponse> {
        if !request.get_ref().token.trim().is_empty() {
            self.limit_token(&request, &request.get_ref().token).await?;
        }
        let token = request.get_ref().token.trim();
        // Without the mailed token, the account's own session cancels.
        let caller = match token.is_empty() {
            true => optional_caller(&request).await?,
            false => None,
        };
        if let Some(caller) = &caller {
            caller.require_user_session()?;
        }
        self.accounts
            .cancel_account_deletion(Some(token), caller.as_ref(), &client(&request))
            .await?;
        Ok(Response::new(CancelAccountDeletionResponse {}))
    }

    async fn get_account_deletion_status(
        &self,
        request: Request<GetAccountDeletionStatusRequest>,
    ) -> Reply<GetAccountDeletionStatusResponse> {
        let (state, scheduled_for) = match self.accounts.account_deletion_status(caller(&request)?).await? {
            DeletionState::None => (AccountDeletionState::None, None),
            DeletionState::Requested => (AccountDeletionState::Requested, None),
            DeletionState::Scheduled(at) => (AccountDeletionState::Scheduled, Some(convert::timestamp(at))),
        };
        Ok(Response::new(GetAccountDeletionStatusResponse {
            state: state.into(),
            scheduled_for,
        }))
    }

    async fn list_providers(&self, _: Request<ListProvidersRequest>) -> Reply<ListProvidersResponse> {
        let providers = self
            .providers
            .list()
            .map(|p| Provider {
                name: p.settings.name.clone(),
                display_name: p.settings.display_name.clone(),
                issuer: p.settings.issuer.clone(),
            })
            .collect();
        Ok(Response::new(ListProvidersResponse { providers }))
    }

    async fn login_with_provider(
        &self,
        request: Request<LoginWithProviderRequest>,
    ) -> Reply<LoginWithProviderResponse> {
        let client = client(&request);
        let req = request.into_inner();
        let device_name = req.device_name.as_deref();
        let (provider, claims) = self
            .provider_claims(
                &client,
                &req.provider,
                &req.id_token,
                req.nonce.as_deref(),
                ("device_name", device_name, bounds::LABEL),
            )
            .await?;
        let done = self
            .accounts
            .login_with_provider(&provider.settings, &claims, device_name, &client)
            .await?;
        Ok(Response::new(LoginWithProviderResponse {
            user: Some(convert::signed_in_user(&self.accounts, &done.logged_in, self.clock.now()).await),
            tokens: Some(convert::tokens(done.logged_in.tokens)),
            created: done.created,
        }))
    }

    async fn link_provider(&self, request: Request<LinkProviderRequest>) -> Reply<LinkProviderResponse> {
        let caller = caller(&request)?.clone();
        let client = client(&request);
        let req = request.into_inner();
        let password = req.current_password.as_deref();
        if password.is_some() {
            // Password guesses here count with those of ChangePassword and UpdateMe.
            self.limits
                .enforce_for(
                    ratelimit::PASSWORD_CHECK_PER_ACCOUNT,
                    &caller.user_id.to_string(),
                    Some(caller.user_id),
                    &client,
                )
                .await?;
        }
        let (provider, claims) = self
            .provider_claims(
                &client,
                &req.provider,
                &req.id_token,
                req.nonce.as_deref(),
                ("current_password", password, bounds::PASSWORD),
            )
            .await?;
        self.accounts
            .link_provider(&caller, &provider.settings, &claims, password, &client)
            .await?;
        Ok(Response::new(LinkProviderResponse {}))
    }

    async fn unlink_provider(&self, request: Request<UnlinkProviderRequest>) -> Reply<UnlinkProviderResponse> {
        let caller = caller(&request)?.clone();
        let req = request.get_ref();
        bounds::check(&[("provider", &req.provider, bounds::LABEL)])?;
        let client = client(&request);
        let configured: Vec<&str> = self.providers.list().map(|p| p.settings.name.as_str()).collect();
        self.accounts
            .unlink_provider(&caller, req.provider.trim(), &configured, &client)
            .await?;
        Ok(Response::new(UnlinkProviderResponse {}))
    }
}
