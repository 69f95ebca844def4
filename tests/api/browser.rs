//! The pages the links in mail open, in a real headless Chromium driven by Selenium
//! (`tests/browser/drive.py`), following the links from mails caught by the test's SMTP server.
//! `scripts/test.sh` installs Chromium, its driver and Selenium (`ensure_browser` in
//! `scripts/lib/tools.sh`) and names them in `AUTHD_BROWSER_PYTHONPATH`, `AUTHD_CHROMIUM` and
//! `AUTHD_CHROMEDRIVER`.

use crate::cluster::free_port;
use crate::helpers::*;
use crate::pages::{email_verified, scheduled};
use crate::smtp::SmtpServer;
use authd::proto::*;
use serde_json::{Value, json};
use std::time::Duration;

/// What the browser showed after one step.
#[derive(Debug)]
struct Shown {
    title: String,
    text: String,
    fields: Value,
}

/// Runs `steps` in one browser session; what each left on screen.
async fn browse(steps: Value) -> Vec<Shown> {
    let pythonpath = std::env::var("AUTHD_BROWSER_PYTHONPATH")
        .expect("AUTHD_BROWSER_PYTHONPATH: run the suite through ./scripts/test.sh, which installs the browser");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/drive.py");
    let input = steps.to_string();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .env("PYTHONPATH", pythonpath)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tests/browser/drive.py");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the browser failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let shown: Value = serde_json::from_str(line).unwrap();
            Shown {
                title: shown["title"].as_str().unwrap_or_default().to_string(),
                text: shown["text"].as_str().unwrap_or_default().to_string(),
                fields: shown["fields"].clone(),
            }
        })
        .collect()
}

/// An authd whose mail links lead to its own HTTP port, and its SMTP server.
async fn app_linking_to_itself() -> (TestApp, SmtpServer) {
    let smtp = SmtpServer::start().await;
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let public = format!("http://{http}");
    let url = smtp.url();
    let app = spawn_app_with(&[
        ("AUTHD_SMTP_URL", url.as_str()),
        ("AUTHD_HTTP_ADDR", http.as_str()),
        ("AUTHD_PUBLIC_URL", public.as_str()),
        ("AUTHD_MAIL_POLL_INTERVAL", "1s"),
        ("AUTHD_PRODUCT_NAME", "Acme"),
    ])
    .await;
    (app, smtp)
}

/// The whole link to `path` in the newest mail to `to` (after `n` mails).
async fn followed_link(app: &TestApp, smtp: &SmtpServer, to: &str, n: usize, path: &str) -> String {
    smtp.wait_for(to, n, Duration::from_secs(10)).await;
    let mail = smtp.to(to).pop().unwrap();
    let prefix = format!("http://{}{path}?token=", app.http);
    mail.link(&prefix)
        .unwrap_or_else(|| panic!("no link to {prefix} in {}", mail.decoded()))
}

fn password_login(password: &str) -> LoginRequest {
    LoginRequest {
        identifier: "rita".into(),
        password: password.into(),
        device_name: None,
    }
}

#[tokio::test]
async fn a_reset_link_works_once_in_a_browser() {
    let (app, smtp) = app_linking_to_itself().await;
    app.register("rita").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "rita@example.com".into(),
        })
        .await
        .unwrap();
    let link = followed_link(&app, &smtp, "rita@example.com", 1, "/reset-password").await;
    let submit = "button[type=submit]";
    let shown = browse(json!([
        {"open": link},
        {"fill": {"new_password": "password", "confirm_password": "password"}},
        {"click": submit},
        {"fill": {"new_password": "a tram through the orchard", "confirm_password": "a tram through the orchard"}},
        {"click": submit},
        {"open": link},
    ]))
    .await;
    assert_eq!(shown[0].title, "Choose a new password · Acme", "{shown:?}");
    assert!(shown[0].text.contains("New password"), "{}", shown[0].text);
    // The weak password: the RPC's words on the form, the link kept, nothing changed.
    assert!(
        shown[2].text.contains("The new password is too weak"),
        "{}",
        shown[2].text
    );
    let token_len = link.len() - link.find("token=").unwrap() - "token=".len();
    assert_eq!(
        shown[2].fields["token"],
        format!("<{token_len} characters>"),
        "the token is kept on the form"
    );
    // The good one.
    assert!(shown[4].text.contains("Your password is changed"), "{}", shown[4].text);
    // The same link again.
    assert!(
        shown[5].text.contains("This link has expired or was already used"),
        "{}",
        shown[5].text
    );
    app.auth()
        .login(password_login("a tram through the orchard"))
        .await
        .expect("the new password works");
    assert!(app.auth().login(password_login(PASSWORD)).await.is_err());
}

#[tokio::test]
async fn verification_and_deletion_take_the_click() {
    let (app, smtp) = app_linking_to_itself().await;
    let tokens = app.user("rita").await;
    app.auth()
        .send_verification_email(SendVerificationEmailRequest {
            email: "rita@example.com".into(),
        })
        .await
        .unwrap();
    let link = followed_link(&app, &smtp, "rita@example.com", 1, "/verify-email").await;
    // Opening the link (as a mail scanner would) changes nothing.
    let opened = browse(json!([{"open": link}])).await;
    assert!(
        opened[0].text.contains("Confirm your email address"),
        "{}",
        opened[0].text
    );
    assert!(
        !email_verified(&app, &tokens.access_token).await,
        "the GET alone verified the address"
    );
    let clicked = browse(json!([{"open": link}, {"click": "button[type=submit]"}])).await;
    assert!(
        clicked[1].text.contains("Your address is confirmed"),
        "{}",
        clicked[1].text
    );
    assert!(email_verified(&app, &tokens.access_token).await);

    app.auth()
        .request_account_deletion(RequestAccountDeletionRequest {
            email: "rita@example.com".into(),
        })
        .await
        .unwrap();
    let link = followed_link(&app, &smtp, "rita@example.com", 2, "/confirm-deletion").await;
    let status = || async {
        app.auth()
            .get_account_deletion_status(bearer(GetAccountDeletionStatusRequest {}, &tokens.access_token))
            .await
            .map(|r| r.into_inner().state())
    };
    let shown = browse(json!([{"open": link}])).await;
    assert!(shown[0].text.contains("deleted for good on"), "{}", shown[0].text);
    assert_eq!(status().await.unwrap(), AccountDeletionState::Requested);
    let shown = browse(json!([{"open": link}, {"click": "button[type=submit]"}])).await;
    assert!(
        shown[1].text.contains("Your account will be deleted"),
        "{}",
        shown[1].text
    );
    assert!(shown[1].text.contains("Cancel the deletion"), "{}", shown[1].text);
    // Scheduled: every session ended, so the old access token no longer asks.
    assert!(status().await.is_err(), "the session survived the confirmation");
    assert!(scheduled(&app, "rita").await, "the click scheduled nothing");
}
