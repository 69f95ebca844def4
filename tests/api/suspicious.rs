//! Sign-ins from new devices (`login.new_device` and its mail) and the `suspicious.*` flags of
//! the audit trail, over real SMTP with client addresses named by a trusted proxy.

use crate::helpers::*;
use crate::smtp::{SmtpServer, app_with_smtp, link_prefix};
use authd::proto::*;
use diesel_async::RunQueryDsl;
use std::time::Duration;
use tonic::Code;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SESSIONS_URL: &str = "https://app.example.test/account/sessions";

/// A login by `identifier` from `address` (named by the trusted proxy) with `user_agent`.
async fn login_as(
    app: &TestApp,
    address: &str,
    user_agent: &str,
    identifier: &str,
    password: &str,
) -> Result<LoginResponse, tonic::Status> {
    let mut request = from_address(
        LoginRequest {
            identifier: identifier.into(),
            password: password.into(),
            device_name: None,
        },
        address,
    );
    request.metadata_mut().insert("user-agent", user_agent.parse().unwrap());
    app.auth().login(request).await.map(|r| r.into_inner())
}

/// How many events of `kind` the trail holds, and with `condition` on them (SQL) if given.
async fn events(app: &TestApp, kind: &str, condition: &str) -> i64 {
    let condition = if condition.is_empty() { "true" } else { condition };
    app.count(&format!(
        "SELECT count(*) FROM audit_events WHERE type = '{kind}' AND {condition}"
    ))
    .await
}

/// [`events`] once it reaches `expected` (a check that runs after the answer), or at 10 s.
async fn events_eventually(app: &TestApp, kind: &str, condition: &str, expected: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = events(app, kind, condition).await;
        if n == expected || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many `login.new_device` events the trail holds (with `condition` if given).
async fn new_devices(app: &TestApp, condition: &str) -> i64 {
    events(app, "login.new_device", condition).await
}

/// A successful login with [`PASSWORD`] as [`login_as`].
async fn sign_in(app: &TestApp, address: &str, user_agent: &str, identifier: &str) {
    login_as(app, address, user_agent, identifier, PASSWORD)
        .await
        .expect("login");
}

/// Verifies `name@example.com` by the link mailed to it (mail number `n` to it).
async fn verify_address(app: &TestApp, smtp: &SmtpServer, name: &str, n: usize) {
    let address = format!("{name}@example.com");
    app.auth()
        .send_verification_email(SendVerificationEmailRequest { email: address.clone() })
        .await
        .unwrap();
    let mail = smtp.wait_for(&address, n, Duration::from_secs(10)).await;
    let token = mail.token(&link_prefix("/verify-email")).unwrap();
    app.auth().verify_email(VerifyEmailRequest { token }).await.unwrap();
}

fn trusted_proxy() -> (&'static str, &'static str) {
    ("AUTHD_TRUSTED_PROXIES", "127.0.0.1/32, ::1")
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_is_recorded_and_mailed_at_most_hourly() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[trusted_proxy(), ("AUTHD_SESSIONS_URL", SESSIONS_URL)]).await;
    app.register("nia").await;
    verify_address(&app, &smtp, "nia", 1).await;
    // The first sign-in after registering, from elsewhere: news, because the device that
    // registered is on record (an account with no device and no session would take it as its
    // first).
    sign_in(&app, "203.0.113.7", FIREFOX, "nia").await;
    assert_eq!(
        new_devices(
            &app,
            "ip_address = '203.0.113.7' AND details::jsonb->>'family' = 'Firefox on Linux' \
             AND details::jsonb->>'network' = '203.0.113.0/24' AND details::jsonb->>'mail' = 'written'"
        )
        .await,
        1
    );
    let mail = smtp.wait_for("nia@example.com", 2, Duration::from_secs(10)).await;
    let text = mail.decoded();
    assert!(text.contains("Subject: New sign-in to your account"), "{text}");
    for fact in [
        "203.0.113.7",
        "203.0.113.0/24",
        "Device: Firefox on Linux",
        SESSIONS_URL,
    ] {
        assert!(text.contains(fact), "{fact} in {text}");
    }
    // The raw user agent, the client's to write, is not shown.
    assert!(!text.contains("Gecko/20100101"), "{text}");
    // The device that registered is known.
    app.login("nia", PASSWORD).await;
    assert_eq!(new_devices(&app, "").await, 1);

    // The same device (a newer version of the browser, another address of the network): nothing.
    let newer = FIREFOX.replace("128.0", "129.0");
    sign_in(&app, "203.0.113.99", &newer, "nia").await;
    assert_eq!(new_devices(&app, "").await, 1);

    // Another new device within the hour: recorded, not mailed now, but told of when the hour
    // is over.
    sign_in(&app, "198.51.100.4", CHROME_MAC, "nia").await;
    assert_eq!(
        new_devices(
            &app,
            "details::jsonb->>'family' = 'Chrome on macOS' AND details::jsonb->>'mail' = 'deferred'"
        )
        .await,
        1
    );
    // The same way from IPv6 (a /48 of its own): that later notice covers it too.
    sign_in(&app, "2001:db8:7:1::5", CHROME_MAC, "nia").await;
    assert_eq!(
        new_devices(
            &app,
            "details::jsonb->>'network' = '2001:db8:7::/48' AND details::jsonb->>'mail' = 'throttled'"
        )
        .await,
        1
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.to("nia@example.com").len(), 2, "one mail an hour");

    // When the hour is over, the notice of the others goes out: the first of them.
    app.clock.advance(Duration::from_secs(61 * 60));
    let mail = smtp.wait_for("nia@example.com", 3, Duration::from_secs(10)).await;
    let text = mail.decoded();
    assert!(text.contains("Subject: More new sign-ins to your account"), "{text}");
    assert!(
        text.contains("Device: Chrome on macOS") && text.contains("198.51.100.4"),
        "{text}"
    );
    // It counts in its hour: the next new device waits for the hour after.
    sign_in(&app, "192.0.2.1", "curl/8.5.0", "nia").await;
    assert_eq!(new_devices(&app, "details::jsonb->>'mail' = 'deferred'").await, 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.to("nia@example.com").len(), 3);
    app.clock.advance(Duration::from_secs(60 * 60));
    let mail = smtp.wait_for("nia@example.com", 4, Duration::from_secs(10)).await;
    assert!(mail.decoded().contains("Device: curl"), "{}", mail.decoded());
    assert_eq!(new_devices(&app, "").await, 4);
    // The table holds digests only: a fingerprint is not the device in the clear.
    assert_eq!(
        app.count("SELECT count(*) FROM known_devices WHERE fingerprint !~ '^[0-9a-f]{32}$'")
            .await,
        0
    );
}

#[tokio::test]
async fn new_devices_are_not_mailed_when_configured_off_nor_to_an_unverified_address() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[trusted_proxy(), ("AUTHD_NEW_DEVICE_MAIL", "false")]).await;
    app.register("oto").await;
    verify_address(&app, &smtp, "oto", 1).await;
    sign_in(&app, "203.0.113.7", FIREFOX, "oto").await;
    assert_eq!(new_devices(&app, "details::jsonb->>'mail' = 'off'").await, 1);

    let app = app_with_smtp(&smtp, &[trusted_proxy()]).await;
    app.register("pam").await;
    sign_in(&app, "203.0.113.7", FIREFOX, "pam").await;
    assert_eq!(
        new_devices(&app, "details::jsonb->>'mail' = 'unverified_address'").await,
        1
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.to("oto@example.com").len(), 1, "only the verification");
    assert!(smtp.to("pam@example.com").is_empty());
}

/// As if no device had been kept: none on record, and no notice in the trail.
async fn forget_devices(app: &TestApp) {
    let mut db = app.db().await;
    for statement in [
        "DELETE FROM known_devices",
        "DELETE FROM audit_events WHERE type = 'login.new_device'",
    ] {
        diesel::sql_query(statement).execute(&mut db).await.unwrap();
    }
}

#[tokio::test]
async fn an_account_without_devices_on_record_takes_those_of_its_sessions_and_sign_ins() {
    let app = spawn_app_with(&[trusted_proxy()]).await;
    // Devices were not kept when these sessions opened.
    app.register("raf").await;
    sign_in(&app, "203.0.113.7", FIREFOX, "raf").await;
    forget_devices(&app).await;
    // A device of a live session is known; one of none is new.
    sign_in(&app, "203.0.113.8", FIREFOX, "raf").await;
    assert_eq!(new_devices(&app, "").await, 0);
    sign_in(&app, "198.51.100.4", CHROME_MAC, "raf").await;
    assert_eq!(new_devices(&app, "").await, 1);
    // With no device and no session at all, the first sign-in is the account's first device.
    app.register("sol").await;
    let mut db = app.db().await;
    diesel::sql_query("DELETE FROM known_devices WHERE user_id = (SELECT id FROM users WHERE username = 'sol')")
        .execute(&mut db)
        .await
        .unwrap();
    sign_in(&app, "198.51.100.4", CHROME_MAC, "sol").await;
    assert_eq!(new_devices(&app, "").await, 1, "raf's only");
    // ... and the next one from elsewhere is news.
    sign_in(&app, "203.0.113.7", FIREFOX, "sol").await;
    assert_eq!(new_devices(&app, "").await, 2);

    // A sign-in that ends the other sessions (single-session) still sees their devices: their
    // sign-ins are in the trail.
    let app = spawn_app_with(&[trusted_proxy(), ("AUTHD_SINGLE_SESSION", "true")]).await;
    app.register("tao").await;
    sign_in(&app, "203.0.113.7", FIREFOX, "tao").await;
    forget_devices(&app).await;
    sign_in(&app, "198.51.100.4", CHROME_MAC, "tao").await;
    assert_eq!(
        new_devices(&app, "details::jsonb->>'family' = 'Chrome on macOS'").await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1,
        "the Firefox session ended"
    );
}

/// `authd.audit.suspicious` for `kind`, as scraped.
fn suspicious_count(app: &TestApp, kind: &str) -> f64 {
    let text = app.app.metrics.render().unwrap();
    let prefix = format!("authd_audit_suspicious_total{{kind=\"{kind}\"");
    text.lines()
        .find(|line| line.starts_with(&prefix))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn failed_logins_from_many_addresses_are_flagged_once() {
    let app = spawn_app_with(&[trusted_proxy(), ("AUTHD_LOCKOUT_THRESHOLD", "3")]).await;
    app.register("tam").await;
    let burst = "suspicious.failed_login_burst";
    for i in 1..=4 {
        let failed = login_from(&app, &format!("203.0.113.{i}"), "tam", "not the password").await;
        assert_eq!(failed.unwrap_err().code(), Code::Unauthenticated);
    }
    // Four addresses, the last ones refused by the lockout: not yet a burst.
    assert_eq!(events(&app, burst, "").await, 0);
    login_from(&app, "198.51.100.9", "tam", "not the password")
        .await
        .unwrap_err();
    let flagged = "details::jsonb->>'addresses' = '5' AND details::jsonb->>'failures' = '5' \
                   AND user_id = (SELECT id FROM users WHERE username = 'tam') AND outcome = 'failure'";
    assert_eq!(events_eventually(&app, burst, flagged, 1).await, 1);
    // Counted once the flag's transaction committed, a moment after it is seen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(suspicious_count(&app, burst), 1.0);
    // More of the same burst: still one flag. Many failures from one address are no burst.
    login_from(&app, "198.51.100.10", "tam", "not the password")
        .await
        .unwrap_err();
    app.register("uma").await;
    for _ in 0..8 {
        login_from(&app, "203.0.113.50", "uma", "not the password")
            .await
            .unwrap_err();
    }
    // Nor are five addresses of one IPv6 /64 (one host may hold it all).
    for i in 1..=5 {
        login_from(&app, &format!("2001:db8:5:6::{i}"), "uma", "not the password")
            .await
            .unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(events(&app, burst, "").await, 1);
    // An unknown identifier is flagged for no account.
    for i in 1..=6 {
        login_from(&app, &format!("192.0.2.{i}"), "nobody", "x")
            .await
            .unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(events(&app, burst, "").await, 1);
    // A later window flags again.
    app.clock.advance(Duration::from_secs(16 * 60));
    for i in 1..=5 {
        login_from(&app, &format!("192.0.2.{i}"), "tam", "not the password")
            .await
            .unwrap_err();
    }
    assert_eq!(events_eventually(&app, burst, "", 2).await, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(suspicious_count(&app, burst), 2.0);
}

/// Three wrong passwords for `name` (the lockout threshold of these tests).
async fn lock_out(app: &TestApp, name: &str) {
    for _ in 0..3 {
        let refused = app
            .auth()
            .login(LoginRequest {
                identifier: name.into(),
                password: "not the password".into(),
                device_name: None,
            })
            .await;
        assert!(refused.is_err());
    }
}

#[tokio::test]
async fn the_first_login_just_after_a_lockout_is_flagged() {
    let app = spawn_app_with(&[("AUTHD_LOCKOUT_THRESHOLD", "3"), ("AUTHD_LOCKOUT_DURATION", "10m")]).await;
    let flag = "suspicious.login_after_lockout";
    app.register("val").await;
    lock_out(&app, "val").await;
    app.clock.advance(Duration::from_secs(10 * 60 + 30));
    app.login("val", PASSWORD).await;
    assert_eq!(
        events(
            &app,
            flag,
            "(details::jsonb->>'seconds_after')::int BETWEEN 30 AND 40 AND outcome = 'success'"
        )
        .await,
        1
    );
    assert_eq!(suspicious_count(&app, flag), 1.0);
    app.login("val", PASSWORD).await;
    assert_eq!(events(&app, flag, "").await, 1, "only the first login after it");
    // Long after a lockout ended, a login is the owner coming back.
    app.register("wen").await;
    lock_out(&app, "wen").await;
    app.clock.advance(Duration::from_secs(10 * 60 + 16 * 60));
    app.login("wen", PASSWORD).await;
    assert_eq!(events(&app, flag, "").await, 1);
}

#[tokio::test]
async fn an_address_change_soon_after_a_password_reset_is_flagged() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(&smtp, &[]).await;
    let flag = "suspicious.email_change_after_reset";
    app.register("xia").await;
    app.auth()
        .request_password_reset(RequestPasswordResetRequest {
            email: "xia@example.com".into(),
        })
        .await
        .unwrap();
    let mail = smtp.wait_for("xia@example.com", 1, Duration::from_secs(10)).await;
    let new_password = "a brand new password of xia";
    app.auth()
        .reset_password(ResetPasswordRequest {
            token: mail.token(&link_prefix("/reset-password")).unwrap(),
            new_password: new_password.into(),
        })
        .await
        .unwrap();
    let change = |email: &str| UpdateMeRequest {
        username: None,
        email: Some(email.into()),
        current_password: Some(new_password.into()),
    };
    app.clock.advance(Duration::from_secs(20 * 60));
    let tokens = app.login("xia", new_password).await;
    app.users()
        .update_me(bearer(change("xia.elsewhere@example.com"), &tokens.access_token))
        .await
        .unwrap();
    assert_eq!(
        events(
            &app,
            flag,
            "(details::jsonb->>'seconds_after')::int BETWEEN 1200 AND 1210 AND outcome = 'success'"
        )
        .await,
        1
    );
    assert_eq!(suspicious_count(&app, flag), 1.0);
    // More than an hour after the reset: no flag.
    app.clock.advance(Duration::from_secs(41 * 60));
    let tokens = app.login("xia", new_password).await;
    app.users()
        .update_me(bearer(change("xia.again@example.com"), &tokens.access_token))
        .await
        .unwrap();
    assert_eq!(events(&app, flag, "").await, 1);
}

#[tokio::test]
async fn an_account_keeps_the_hundred_devices_it_saw_last() {
    let app = spawn_app_with(&[trusted_proxy()]).await;
    app.register("ivy").await;
    // 150 devices seen long ago, beside the one that registered.
    let mut db = app.db().await;
    diesel::sql_query(
        "INSERT INTO known_devices (user_id, fingerprint, first_seen, last_seen) \
         SELECT (SELECT id FROM users WHERE username = 'ivy'), md5(g::text), \
                now() - interval '30 days', now() - interval '30 days' + g * interval '1 minute' \
         FROM generate_series(1, 150) AS g",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sign_in(&app, "203.0.113.7", FIREFOX, "ivy").await;
    assert_eq!(new_devices(&app, "").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM known_devices").await, 100);
    // The oldest went; the new one and the one that registered stayed.
    assert_eq!(
        app.count("SELECT count(*) FROM known_devices WHERE fingerprint = md5('50')")
            .await,
        0
    );
    sign_in(&app, "203.0.113.8", FIREFOX, "ivy").await;
    app.login("ivy", PASSWORD).await;
    assert_eq!(new_devices(&app, "").await, 1);
}
