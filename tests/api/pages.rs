//! The pages the links in mail open, over plain HTTP: what a GET shows and leaves alone, what a
//! submit does, the outcomes in words, the headers of every page, the limit. The same flows in a
//! real browser are `tests/browser/`.

use crate::helpers::*;
use crate::smtp::{SmtpServer, app_with_smtp, link_prefix};
use authd::proto::*;
use std::time::Duration;

/// The path and query of the first link to `path` in the newest mail to `to`.
async fn mailed_link(smtp: &SmtpServer, to: &str, n: usize, path: &str) -> (String, String) {
    smtp.wait_for(to, n, Duration::from_secs(10)).await;
    let mail = smtp.to(to).pop().expect("a mail");
    let token = mail.token(&link_prefix(path)).expect("a link under AUTHD_PUBLIC_URL");
    (format!("{path}?token={token}"), token)
}

/// The headers every page carries, whatever its outcome.
fn assert_secure(answer: &HttpAnswer, what: &str) {
    let header = |name: &str| answer.headers.get(name).map(String::as_str).unwrap_or_default();
    let csp = header("content-security-policy");
    for part in [
        "default-src 'none'",
        "style-src 'sha256-",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert!(
        header("content-type").starts_with("text/html"),
        "{what}: {}",
        header("content-type")
    );
    assert!(answer.body.starts_with("<!DOCTYPE html>"), "{what}: {}", answer.body);
    assert!(!answer.body.contains("<script"), "{what}");
}

/// Whether the account of `access_token` has its address verified.
pub async fn email_verified(app: &TestApp, access_token: &str) -> bool {
    app.users()
        .get_me(bearer(GetMeRequest {}, access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .email_verified
}

/// Whether `username`'s account is scheduled for deletion.
pub async fn scheduled(app: &TestApp, username: &str) -> bool {
    use diesel::sql_types::Bool;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        scheduled: bool,
    }
    let mut db = app.db().await;
    let row: Row = diesel::sql_query(format!(
        "SELECT deletion_scheduled_for IS NOT NULL AS scheduled FROM users WHERE username = '{username}'"
    ))
    .get_result(&mut db)
    .await
    .unwrap();
    row.scheduled
}

#[tokio::test]
async fn the_reset_page_spends_its_token_only_on_a_good_submit() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[("AUTHD_PRODUCT_NAME", "Acme <ID>")]).await;
    app.register("pam").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "pam@example.com".into(),
        })
        .await
        .unwrap();
    let (link, token) = mailed_link(&smtp, "pam@example.com", 1, "/reset-password").await;

    // A mail scanner fetches the link twice: the form both times, and nothing spent.
    for _ in 0..2 {
        let form = http_request(app.http, "GET", &link, &[]).await;
        assert_eq!(form.status, 200, "{}", form.body);
        assert_secure(&form, "the reset form");
        assert!(form.body.contains("Choose a new password"));
        assert!(
            form.body.contains(&format!("value=\"{token}\"")),
            "the token rides in the form"
        );
        assert!(form.body.contains("Acme &lt;ID&gt;"), "the product name, escaped");
        assert!(form.body.contains("<label for=\"new_password\">"), "labelled fields");
    }

    // A weak password: the RPC's rule and words, on the form, with the link still good.
    let weak = http_post_form(
        app.http,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "password"),
            ("confirm_password", "password"),
        ],
    )
    .await;
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert_secure(&weak, "a refused password");
    assert!(weak.body.contains("The new password is too weak"), "{}", weak.body);
    assert!(weak.body.contains(&format!("value=\"{token}\"")));
    let short = http_post_form(
        app.http,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "short"),
            ("confirm_password", "short"),
        ],
    )
    .await;
    assert!(
        short.body.contains("The new password must be at least 8 characters"),
        "{}",
        short.body
    );
    let differ = http_post_form(
        app.http,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "a brand new passphrase"),
            ("confirm_password", "a brand new passphrasf"),
        ],
    )
    .await;
    assert_eq!(differ.status, 422);
    assert!(differ.body.contains("The two passwords differ"), "{}", differ.body);
    app.login("pam", PASSWORD).await;

    let done = http_post_form(
        app.http,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "a brand new passphrase"),
            ("confirm_password", "a brand new passphrase"),
        ],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_secure(&done, "a reset done");
    assert!(done.body.contains("Your password is changed"), "{}", done.body);
    app.login("pam", "a brand new passphrase").await;
    let old = app
        .auth()
        .login(LoginRequest {
            identifier: "pam".into(),
            password: PASSWORD.into(),
            device_name: None,
        })
        .await;
    assert!(old.is_err(), "the old password is gone");

    // The same link again: dead, from the GET already, and on a submit.
    let again = http_request(app.http, "GET", &link, &[]).await;
    assert_eq!(again.status, 410, "{}", again.body);
    assert_secure(&again, "a used link");
    assert!(again.body.contains("expired or was already used"));
    assert!(again.body.contains("Ask for a new password-reset mail"));
    let resubmit = http_post_form(
        app.http,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "yet another passphrase"),
            ("confirm_password", "yet another passphrase"),
        ],
    )
    .await;
    assert_eq!(resubmit.status, 410);

    // No token in any log line.
    assert!(!captured_log().contains(&token), "a token was logged");
}

#[tokio::test]
async fn verification_and_deletion_happen_on_the_click_only() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let tokens = app.user("vic").await;
    app.auth()
        .send_verification_email(SendVerificationEmailRequest {
            email: "vic@example.com".into(),
        })
        .await
        .unwrap();
    let (link, token) = mailed_link(&smtp, "vic@example.com", 1, "/verify-email").await;
    let form = http_request(app.http, "GET", &link, &[]).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert_secure(&form, "the verification form");
    assert!(
        !email_verified(&app, &tokens.access_token).await,
        "a GET verifies nothing"
    );
    let done = http_post_form(app.http, "/verify-email", &[("token", &token)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_secure(&done, "verified");
    assert!(done.body.contains("Your address is confirmed"));
    assert!(email_verified(&app, &tokens.access_token).await);

    app.auth()
        .request_account_deletion(RequestAccountDeletionRequest {
            email: "vic@example.com".into(),
        })
        .await
        .unwrap();
    let (link, token) = mailed_link(&smtp, "vic@example.com", 2, "/confirm-deletion").await;
    let form = http_request(app.http, "GET", &link, &[]).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert_secure(&form, "the deletion form");
    assert!(form.body.contains("deleted for good on"), "{}", form.body);
    assert!(form.body.contains("cancel"), "says how to cancel");
    assert!(!scheduled(&app, "vic").await, "a GET schedules nothing");
    let confirmed = http_post_form(
        app.http,
        "/confirm-deletion",
        &[("token", &token), ("action", "confirm")],
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert!(confirmed.body.contains("Your account will be deleted"));
    assert!(scheduled(&app, "vic").await);
    // A second click (or a reload of that page) says the same, with the cancel still offered.
    let twice = http_post_form(
        app.http,
        "/confirm-deletion",
        &[("token", &token), ("action", "confirm")],
    )
    .await;
    assert_eq!(twice.status, 200, "{}", twice.body);
    assert!(twice.body.contains("Cancel the deletion"), "{}", twice.body);
    // An action that is neither confirms nor cancels anything.
    let odd = http_post_form(
        app.http,
        "/confirm-deletion",
        &[("token", &token), ("action", "Cancel")],
    )
    .await;
    assert_eq!(odd.status, 400, "{}", odd.body);
    assert!(scheduled(&app, "vic").await);
    // The link, opened again, says when and offers the cancel.
    let again = http_request(app.http, "GET", &link, &[]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("Cancel the deletion"), "{}", again.body);
    let cancelled = http_post_form(
        app.http,
        "/confirm-deletion",
        &[("token", &token), ("action", "cancel")],
    )
    .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert!(cancelled.body.contains("Your account stays"));
    assert!(!scheduled(&app, "vic").await);
    let dead = http_request(app.http, "GET", &link, &[]).await;
    assert_eq!(dead.status, 410, "{}", dead.body);
    assert!(!captured_log().contains(&token), "a token was logged");
}

/// The policy's hash is the hash of the stylesheet the page carries, and the headers are on
/// the answers the router makes itself (a wrong method, a HEAD) too.
#[tokio::test]
async fn the_policy_matches_the_page_and_covers_every_answer() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let app = spawn_app().await;
    let page = http_request(app.http, "GET", "/verify-email", &[]).await;
    let style = page
        .body
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(style, _)| style)
        .expect("an inline stylesheet");
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style.as_bytes()));
    let csp = &page.headers["content-security-policy"];
    assert!(
        csp.contains(&format!("style-src 'sha256-{hash}'")),
        "{csp} does not allow the page's own style ({hash})"
    );
    let put = http_request(app.http, "PUT", "/reset-password?token=x", &[]).await;
    assert_eq!(put.status, 405);
    assert_eq!(put.headers["referrer-policy"], "no-referrer");
    assert!(put.headers["content-security-policy"].starts_with("default-src 'none'"));
    assert_eq!(put.headers["cache-control"], "no-store");
    let head = http_request(app.http, "HEAD", "/confirm-deletion?token=x", &[]).await;
    assert_eq!(head.headers["referrer-policy"], "no-referrer");
    assert_eq!(head.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn broken_links_and_floods_get_plain_pages() {
    let app = spawn_app_with(&behind_a_proxy()).await;
    const FROM: &str = "198.51.100.77";
    let from = [("x-forwarded-for", FROM)];
    for path in ["/reset-password", "/verify-email", "/confirm-deletion"] {
        let bare = http_request(app.http, "GET", path, &[]).await;
        assert_eq!(bare.status, 400, "{path}: {}", bare.body);
        assert_secure(&bare, path);
        assert!(bare.body.contains("This link is incomplete"));
        let unknown = http_request(app.http, "GET", &format!("{path}?token=nonsense"), &[]).await;
        assert_eq!(unknown.status, 410, "{path}");
        assert_secure(&unknown, path);
        let fields = [
            ("token", "nonsense"),
            ("new_password", "a brand new passphrase"),
            ("confirm_password", "a brand new passphrase"),
            ("action", "confirm"),
        ];
        let junk = http_post_form_with(app.http, path, &fields, &from).await;
        assert_eq!(junk.status, 410, "{path}: {}", junk.body);
        assert_secure(&junk, path);
    }
    // The submits share the per-address limit of the RPCs that spend a token (10 a minute):
    // three went above, and the RPC counts too.
    let _ = app
        .auth()
        .verify_email(from_address(
            VerifyEmailRequest {
                token: "nonsense".into(),
            },
            FROM,
        ))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let answer = http_post_form_with(app.http, "/verify-email", &[("token", "nonsense")], &from).await;
        statuses.push(answer.status);
    }
    assert_eq!(statuses[..6], [410; 6], "{statuses:?}");
    assert_eq!(statuses[6], 429, "{statuses:?}");
    let refused = http_post_form_with(app.http, "/verify-email", &[("token", "nonsense")], &from).await;
    assert_eq!(refused.status, 429);
    assert_secure(&refused, "too many");
    assert!(refused.body.contains("Too many attempts"), "{}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
}
