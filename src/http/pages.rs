//! The pages the links in authd's mail open, on `AUTHD_HTTP_ADDR`: `/reset-password`,
//! `/verify-email` and `/confirm-deletion`, each `?token=…`. Server-rendered HTML (maud escapes
//! every value), no script, no external resource, one inline stylesheet allowed by its hash.
//!
//! A `GET` only reads: it shows the form, or says the link is dead, and never spends the token
//! (mail scanners and link previews fetch every link); only the person's submit does. The form posts the token in its body to the same path, and
//! the `POST` calls the same operation as the RPC, under the same per-address limit. Every answer
//! carries [`SECURITY_HEADERS`] and is never cached; the token is never logged (the request span
//! records the route only).

use crate::accounts::LinkState;
use crate::app::App;
use crate::error::Error;
use crate::identity::ClientInfo;
use crate::mail::MailKind;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// The one stylesheet, inline.
const STYLE: &str = include_str!("pages.css");

/// `Content-Security-Policy`: nothing but the stylesheet above (by its hash), forms only to
/// authd itself, never framed.
static CSP: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// The headers of every page besides the CSP: the token is in the URL, so no referrer; nothing
/// is cached; no sniffing.
pub const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// The routes of the pages, with their headers on every answer (a refused form too).
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/reset-password", get(reset_form).post(reset_submit))
        .route("/verify-email", get(verify_form).post(verify_submit))
        .route("/confirm-deletion", get(deletion_form).post(deletion_submit))
        .layer(axum::middleware::map_response(secure))
        .with_state(app)
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
    /// On the deletion page: `confirm` or `cancel` (anything else is refused).
    #[serde(default)]
    action: String,
}

/// What a page is about.
#[derive(Clone, Copy)]
enum Flow {
    Reset,
    Verify,
    Delete,
}

impl Flow {
    fn kind(self) -> MailKind {
        match self {
            Flow::Reset => MailKind::ResetPassword,
            Flow::Verify => MailKind::VerifyEmail,
            Flow::Delete => MailKind::DeleteAccount,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Flow::Reset => "reset-password",
            Flow::Verify => "verify-email",
            Flow::Delete => "confirm-deletion",
        }
    }

    /// What to do when the link no longer works.
    fn ask_again(self) -> &'static str {
        match self {
            Flow::Reset => "Ask for a new password-reset mail from the sign-in page, and use the newest link.",
            Flow::Verify => "Sign in and ask for a new verification mail, and use the newest link.",
            Flow::Delete => "Sign in and ask again to delete your account, and use the newest link.",
        }
    }
}

/// One page: the product's name, a title, the content.
fn page(app: &App, status: StatusCode, title: &str, content: Markup) -> Response {
    let product = &app.settings.server.product_name;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · " (product) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    p.product { (product) }
                    h1 { (title) }
                    (content)
                }
            }
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A message above a form: an error (`role="alert"`, read out at once) or a notice.
fn alert(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.alert role="alert" { (message) }
        }
    }
}

/// A link without a token, or with one longer than any authd writes.
fn incomplete(app: &App, flow: Flow) -> Response {
    page(
        app,
        StatusCode::BAD_REQUEST,
        "This link is incomplete",
        html! {
            p { "The link is missing its token, or was cut short. Open it again from the mail, the whole of it." }
            p { (flow.ask_again()) }
        },
    )
}

fn usable(token: &str) -> bool {
    let token = token.trim();
    !token.is_empty() && token.len() <= crate::grpc::bounds::OPAQUE_TOKEN
}

/// The page of an operation that failed.
fn failure(app: &App, flow: Flow, error: &Error) -> Response {
    match error {
        Error::InvalidArgument { field: "token", .. } | Error::Unauthenticated => page(
            app,
            StatusCode::GONE,
            "This link has expired or was already used",
            html! {
                p { "Each link works once, for a limited time, and only the newest one sent works." }
                p { (flow.ask_again()) }
            },
        ),
        Error::RateLimited(retry) => {
            let minutes = retry.as_secs().div_ceil(60).max(1);
            let mut response = page(
                app,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                html! {
                    p { "Too many attempts came from your network. Try again in "
                        (minutes) (if minutes == 1 { " minute." } else { " minutes." }) }
                },
            );
            if let Ok(value) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Error::AlreadyExists(_) => page(
            app,
            StatusCode::CONFLICT,
            "This address belongs to another account",
            html! { p { "Another account already uses this address, so it cannot be moved to yours." } },
        ),
        Error::Unavailable => page(
            app,
            StatusCode::SERVICE_UNAVAILABLE,
            "Not available right now",
            html! { p { "The service cannot do this right now. Your link still works: try again in a minute." } },
        ),
        other => {
            if let Error::Internal(detail) = other {
                tracing::error!(error = %detail, page = flow.path(), "a mail page failed");
            }
            page(
                app,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                html! { p { "Your link was not used. Try again in a minute." } },
            )
        }
    }
}

/// The caller's address (through `AUTHD_TRUSTED_PROXIES`) and user agent, as the RPCs see them.
fn client(app: &App, peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
    crate::net::client_info(Some(peer.ip()), headers, &app.settings.server.trusted_proxies)
}

/// A per-address limit, on the buckets the RPCs use (a submit counts as the RPC it stands for).
async fn limit(app: &App, rule: crate::ratelimit::Limit, client: &ClientInfo) -> Result<(), Error> {
    let bucket = crate::net::address_bucket(client.ip_address.as_deref());
    app.limits.enforce(rule, &bucket, client).await
}

/// The link's token when the link can still be used, else the page that says why not.
async fn open_link(
    app: &App,
    flow: Flow,
    peer: SocketAddr,
    headers: &HeaderMap,
    link: Result<Query<Link>, QueryRejection>,
) -> Result<(String, LinkState), Response> {
    let token = link.map(|Query(link)| link.token).unwrap_or_default();
    if !usable(&token) {
        return Err(incomplete(app, flow));
    }
    let client = client(app, peer, headers);
    if let Err(error) = limit(app, crate::ratelimit::PAGE_VIEW_PER_ADDRESS, &client).await {
        return Err(failure(app, flow, &error));
    }
    let token = token.trim().to_string();
    match app.accounts.link_state(&token, flow.kind()).await {
        Ok(LinkState::Dead) => Err(failure(app, flow, &Error::Unauthenticated)),
        Ok(state) => Ok((token, state)),
        Err(error) => Err(failure(app, flow, &error)),
    }
}

/// A form that carries the token of a mailed link.
trait Submitted {
    fn token(&self) -> &str;
}

impl Submitted for ResetForm {
    fn token(&self) -> &str {
        &self.token
    }
}

impl Submitted for TokenForm {
    fn token(&self) -> &str {
        &self.token
    }
}

/// A submitted form with a usable token, and who sent it, counted as the RPC it stands for;
/// else the page that says why not.
async fn submitted<T: Submitted>(
    app: &App,
    flow: Flow,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<(T, ClientInfo), Response> {
    let Some(Form(form)) = form.ok().filter(|Form(form)| usable(form.token())) else {
        return Err(incomplete(app, flow));
    };
    let client = client(app, peer, headers);
    if let Err(error) = limit(app, crate::ratelimit::TOKEN_PER_ADDRESS, &client).await {
        return Err(failure(app, flow, &error));
    }
    Ok((form, client))
}

fn reset_page(app: &App, status: StatusCode, token: &str, message: Option<&str>) -> Response {
    let rules = app.settings.passwords.policy();
    page(
        app,
        status,
        "Choose a new password",
        html! {
            (alert(message))
            form method="post" action=(Flow::Reset.path()) {
                input type="hidden" name="token" value=(token);
                label for="new_password" { "New password" }
                input #new_password type="password" name="new_password" autocomplete="new-password"
                    required minlength=(crate::domain::Password::MIN_CHARS)
                    maxlength=(crate::domain::Password::MAX_CHARS) aria-describedby="rules";
                p #rules .hint { (crate::domain::Password::MIN_CHARS) " to " (crate::domain::Password::MAX_CHARS)
                    " characters" (rules.describe()) ". A long phrase of unrelated words is easiest to remember." }
                label for="confirm_password" { "The same password again" }
                input #confirm_password type="password" name="confirm_password" autocomplete="new-password"
                    required maxlength=(crate::domain::Password::MAX_CHARS);
                button type="submit" { "Set the new password" }
            }
            p.hint { "Setting it signs you out everywhere." }
        },
    )
}

async fn reset_form(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    link: Result<Query<Link>, QueryRejection>,
) -> Response {
    match open_link(&app, Flow::Reset, peer, &headers, link).await {
        Ok((token, _)) => reset_page(&app, StatusCode::OK, &token, None),
        Err(page) => page,
    }
}

async fn reset_submit(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ResetForm>, FormRejection>,
) -> Response {
    let (form, client) = match submitted(&app, Flow::Reset, peer, &headers, form).await {
        Ok(submitted) => submitted,
        Err(page) => return page,
    };
    let token = form.token.trim();
    if form.new_password.len() > crate::grpc::bounds::PASSWORD {
        let message = format!(
            "The new password must be at most {} bytes.",
            crate::grpc::bounds::PASSWORD
        );
        return reset_page(&app, StatusCode::UNPROCESSABLE_ENTITY, token, Some(&message));
    }
    if form.new_password != form.confirm_password {
        let message = "The two passwords differ. Type the same one twice.";
        return reset_page(&app, StatusCode::UNPROCESSABLE_ENTITY, token, Some(message));
    }
    match app.accounts.reset_password(token, &form.new_password, &client).await {
        Ok(()) => page(
            &app,
            StatusCode::OK,
            "Your password is changed",
            html! {
                p { "Sign in with the new password. Every session of your account was signed out." }
            },
        ),
        // The same rule and words as the RPC, on the form, with the link still usable.
        Err(Error::InvalidArgument {
            field: "new_password",
            reason,
        }) => {
            let message = format!("The new password {reason}.");
            reset_page(&app, StatusCode::UNPROCESSABLE_ENTITY, token, Some(&message))
        }
        Err(error) => failure(&app, Flow::Reset, &error),
    }
}

async fn verify_form(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    link: Result<Query<Link>, QueryRejection>,
) -> Response {
    let token = match open_link(&app, Flow::Verify, peer, &headers, link).await {
        Ok((token, _)) => token,
        Err(page) => return page,
    };
    page(
        &app,
        StatusCode::OK,
        "Confirm your email address",
        html! {
            p { "Confirm that this address is yours, and it becomes your account's address." }
            form method="post" action=(Flow::Verify.path()) {
                input type="hidden" name="token" value=(token);
                button type="submit" { "Confirm my address" }
            }
        },
    )
}

async fn verify_submit(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let (form, client) = match submitted(&app, Flow::Verify, peer, &headers, form).await {
        Ok(submitted) => submitted,
        Err(page) => return page,
    };
    match app.accounts.verify_email(form.token.trim(), &client).await {
        Ok(()) => page(
            &app,
            StatusCode::OK,
            "Your address is confirmed",
            html! { p { "Thank you. You can close this page." } },
        ),
        Err(error) => failure(&app, Flow::Verify, &error),
    }
}

/// A date as people read it, in UTC.
fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y at %H:%M UTC").to_string()
}

/// A confirmed deletion: when, and the button that cancels it.
fn scheduled_page(app: &App, token: &str, purge: DateTime<Utc>) -> Response {
    page(
        app,
        StatusCode::OK,
        "Your account will be deleted",
        html! {
            p { "You are signed out everywhere. Your account and its data will be deleted on "
                strong { (when(purge)) } "." }
            p { "Changed your mind? Cancel before then, here or by signing in." }
            form method="post" action=(Flow::Delete.path()) {
                input type="hidden" name="token" value=(token);
                input type="hidden" name="action" value="cancel";
                button type="submit" { "Cancel the deletion" }
            }
        },
    )
}

async fn deletion_form(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    link: Result<Query<Link>, QueryRejection>,
) -> Response {
    let token = match open_link(&app, Flow::Delete, peer, &headers, link).await {
        Ok((token, LinkState::DeletionScheduled(purge))) => return scheduled_page(&app, &token, purge),
        Ok((token, _)) => token,
        Err(page) => return page,
    };
    let grace = chrono::Duration::from_std(app.settings.accounts.deletion_grace).unwrap_or_default();
    let purge = app.clock.now() + grace;
    page(
        &app,
        StatusCode::OK,
        "Delete your account",
        html! {
            p { "If you confirm, you are signed out everywhere and your account is deleted for good on "
                strong { (when(purge)) } "." }
            p { "Until then you can cancel from this same link, or by signing in." }
            form method="post" action=(Flow::Delete.path()) {
                input type="hidden" name="token" value=(token);
                input type="hidden" name="action" value="confirm";
                button.danger type="submit" { "Delete my account" }
            }
        },
    )
}

async fn deletion_submit(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let (form, client) = match submitted(&app, Flow::Delete, peer, &headers, form).await {
        Ok(submitted) => submitted,
        Err(page) => return page,
    };
    let token = form.token.trim();
    if form.action != "confirm" && form.action != "cancel" {
        return incomplete(&app, Flow::Delete);
    }
    if form.action == "cancel" {
        return match app.accounts.cancel_account_deletion(Some(token), None, &client).await {
            Ok(()) => page(
                &app,
                StatusCode::OK,
                "Your account stays",
                html! { p { "The deletion is cancelled. Sign in as usual." } },
            ),
            Err(error) => failure(&app, Flow::Delete, &error),
        };
    }
    match app.accounts.confirm_account_deletion(token, &client).await {
        Ok(purge) => scheduled_page(&app, token, purge),
        // Confirmed already (a reload, a second click): say when, and keep the cancel.
        Err(Error::InvalidArgument { field: "token", .. }) => {
            match app.accounts.link_state(token, MailKind::DeleteAccount).await {
                Ok(LinkState::DeletionScheduled(purge)) => scheduled_page(&app, token, purge),
                _ => failure(&app, Flow::Delete, &Error::Unauthenticated),
            }
        }
        Err(error) => failure(&app, Flow::Delete, &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_stylesheet_by_its_hash_only() {
        assert!(CSP.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(CSP.contains("form-action 'self'"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!STYLE.contains("url("), "the stylesheet loads nothing");
    }

    #[test]
    fn tokens_are_bounded() {
        assert!(usable("abc"));
        assert!(!usable("  "));
        assert!(!usable(&"x".repeat(crate::grpc::bounds::OPAQUE_TOKEN + 1)));
    }
}
