//! Mail: messages built from templates, written to the outbox in the same transaction as the
//! change that needs them, and delivered by a worker ([`delivery`]) with retries.

pub mod delivery;

use crate::crypto;
use crate::secret::Secret;
use crate::store::{self, Conn, StoreResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a mail is sent; also the purpose of the one-time token it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    ResetPassword,
    DeleteAccount,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::DeleteAccount => "delete_account",
        }
    }

    pub const ALL: [Self; 3] = [Self::VerifyEmail, Self::ResetPassword, Self::DeleteAccount];

    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == kind)
    }

    /// The path of the page the link opens, under `AUTHD_PUBLIC_URL`.
    fn path(self) -> &'static str {
        match self {
            Self::VerifyEmail => "/verify-email",
            Self::ResetPassword => "/reset-password",
            Self::DeleteAccount => "/confirm-deletion",
        }
    }
}

/// A mail that carries no link, only news for the account's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Sent to the current address when a change of address is requested.
    EmailChangeRequested,
    /// Sent to the old address once the change has taken effect.
    EmailChanged,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailChangeRequested => "email_change_requested",
            Self::EmailChanged => "email_changed",
        }
    }
}

/// The kind of the mail about a sign-in from a device the account had not used.
pub const NEW_DEVICE: &str = "new_device";

/// The kind of an outbox row as a label of bounded cardinality (`other` for a name this binary
/// does not know, e.g. written by a newer replica).
pub fn kind_label(kind: &str) -> &'static str {
    [
        MailKind::VerifyEmail.as_str(),
        MailKind::ResetPassword.as_str(),
        MailKind::DeleteAccount.as_str(),
        Notice::EmailChangeRequested.as_str(),
        Notice::EmailChanged.as_str(),
        NEW_DEVICE,
    ]
    .into_iter()
    .find(|known| *known == kind)
    .unwrap_or("other")
}

/// A message ready to send. Its bodies hold a one-time link, so it is never logged.
#[derive(Clone, Serialize, Deserialize)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// The message for `kind`, with a link built from the configured base URL only (never from
    /// anything in the request), carrying the token as the query parameter `token`.
    pub fn new(kind: MailKind, to: &str, public_url: &str, token: &str, valid_for: &str) -> Self {
        let link = format!("{}{}?token={token}", public_url.trim_end_matches('/'), kind.path());
        let (subject, intro, action, outro) = match kind {
            MailKind::VerifyEmail => (
                "Confirm your email address",
                "Please confirm that this address belongs to your account.",
                "Confirm my address",
                "If you did not ask for this, ignore this mail.",
            ),
            MailKind::ResetPassword => (
                "Reset your password",
                "Someone asked to reset the password of the account with this address.",
                "Choose a new password",
                "If it was not you, ignore this mail: your password stays as it is.",
            ),
            MailKind::DeleteAccount => (
                "Confirm the deletion of your account",
                "Someone asked to delete the account with this address.",
                "Delete my account",
                "If it was not you, ignore this mail: nothing will be deleted.",
            ),
        };
        let text = format!("{intro}\n\n{action}: {link}\n\nThe link works once, for {valid_for}.\n\n{outro}\n");
        let html = format!(
            "<!doctype html><html><body><p>{}</p><p><a href=\"{}\">{}</a></p><p>The link works once, for {}.</p><p>{}</p></body></html>",
            escape(intro),
            escape(&link),
            escape(action),
            escape(valid_for),
            escape(outro)
        );
        Self::with_bodies(to, subject, text, html)
    }

    /// The address as the outbox keeps it (and counts its mail by).
    fn recipient(&self) -> String {
        self.to.trim().to_ascii_lowercase()
    }

    fn with_bodies(to: &str, subject: &str, text: String, html: String) -> Self {
        Self {
            to: to.to_string(),
            subject: subject.to_string(),
            text,
            html,
        }
    }
}

impl Message {
    /// A notice to `to` about the account's address, which is now or may become `new_address`.
    pub fn notice(notice: Notice, to: &str, new_address: &str) -> Self {
        let (subject, intro) = match notice {
            Notice::EmailChangeRequested => (
                "A change of your email address was requested",
                format!(
                    "Someone signed in to your account asked to move it to the address {new_address}. \
                     It moves once a link mailed there is followed."
                ),
            ),
            Notice::EmailChanged => (
                "Your email address was changed",
                format!("Your account now uses the address {new_address}; this address no longer belongs to it."),
            ),
        };
        let outro = "If this was not you, reset your password at once and sign out of every session; \
                     if you can no longer sign in, contact the service's administrators.";
        let text = format!("{intro}\n\n{outro}\n");
        let html = format!(
            "<!doctype html><html><body><p>{}</p><p>{}</p></body></html>",
            escape(&intro),
            escape(outro)
        );
        Self::with_bodies(to, subject, text, html)
    }
}

/// What the owner is told of a sign-in from a new device.
pub struct SignInFacts<'a> {
    pub at: DateTime<Utc>,
    pub address: Option<&'a str>,
    pub network: &'a str,
    /// The user agent's family, e.g. "Firefox on Linux" (the whole user agent is not shown).
    pub family: &'a str,
    /// `AUTHD_SESSIONS_URL`: the product's page listing the account's sessions.
    pub sessions_url: Option<&'a str>,
}

impl Message {
    /// The notice of a sign-in from a device (user-agent family and network) the account had not
    /// used: when, from where, and what to do if it was not the owner.
    pub fn new_device(to: &str, facts: &SignInFacts<'_>) -> Self {
        Self::sign_in_notice(
            to,
            facts,
            "New sign-in to your account",
            "Your account was just signed in to from a device or network it had not used before.",
        )
    }

    /// The notice of more such sign-ins within the hour after one was mailed, sent when the hour
    /// is over: the first of them, and the same advice.
    pub fn more_new_devices(to: &str, facts: &SignInFacts<'_>) -> Self {
        Self::sign_in_notice(
            to,
            facts,
            "More new sign-ins to your account",
            "Within an hour of our last notice, your account was signed in to again from a device or \
             network it had not used before. The first of these sign-ins (your sessions list them all):",
        )
    }

    fn sign_in_notice(to: &str, facts: &SignInFacts<'_>, subject: &str, intro: &str) -> Self {
        // The raw user agent is the client's to choose, and mail readers turn what looks like an
        // address into a link: only its family (a browser and system, or a program's bare name:
        // letters, digits, '-' and '_') is shown; the audit trail and the sessions keep it whole.
        let facts_lines = [
            ("When", facts.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            ("Device", facts.family.to_string()),
            (
                "Address",
                format!("{} (network {})", facts.address.unwrap_or("unknown"), facts.network),
            ),
        ];
        let mine = "If this was you, there is nothing to do.";
        let not_mine = match facts.sessions_url {
            Some(url) => format!(
                "If it was not, change your password at once, and end the sessions you do not recognise on {url}."
            ),
            None => "If it was not, change your password at once and sign out of every other session.".to_string(),
        };
        let listed: String = facts_lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let text = format!("{intro}\n\n{listed}\n{mine}\n{not_mine}\n");
        let rows: String = facts_lines
            .iter()
            .map(|(k, v)| format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>", escape(k), escape(v)))
            .collect();
        let html = format!(
            "<!doctype html><html><body><p>{}</p><table>{rows}</table><p>{}</p><p>{}</p></body></html>",
            escape(intro),
            escape(mine),
            escape(&not_mine)
        );
        Self::with_bodies(to, subject, text, html)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Why a mail was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Written,
    /// The address already got `AUTHD_MAIL_RATE_PER_HOUR` mails of this kind in the last hour.
    Throttled,
}

/// Writes a mail to the outbox inside the caller's transaction, unless the per-address limit is
/// reached. The message is sealed under the key-encryption key: the link in it is a secret.
pub async fn enqueue(
    conn: &mut Conn<'_>,
    kek: &Secret<[u8; 32]>,
    kind: &str,
    message: &Message,
    per_hour: u32,
    now: DateTime<Utc>,
) -> StoreResult<Enqueued> {
    let recipient = message.recipient();
    let sent = store::mail::count_recent(conn, &recipient, kind, now - chrono::Duration::hours(1)).await?;
    if sent >= i64::from(per_hour) {
        return Ok(Enqueued::Throttled);
    }
    write(conn, kek, kind, &recipient, message, now).await?;
    Ok(Enqueued::Written)
}

/// Seals `message` into the outbox, to go out at `at` (and counted in that hour's limit).
async fn write(
    conn: &mut Conn<'_>,
    kek: &Secret<[u8; 32]>,
    kind: &str,
    recipient: &str,
    message: &Message,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let sealed = crypto::seal(kek, OUTBOX_CONTEXT, &serde_json::to_vec(message).expect("serialisable"));
    let row = store::mail::NewOutboxRow {
        kind,
        recipient,
        sealed_message: Some(&sealed),
        created_at: at,
        next_attempt_at: at,
    };
    store::mail::insert(conn, &row).await
}

/// After [`enqueue`] throttled a mail of `kind`: writes `message` to go out an hour after the
/// latest one of its kind to the same address (so still no more than one an hour), unless one
/// waits already. Whether it wrote it.
pub async fn defer(
    conn: &mut Conn<'_>,
    kek: &Secret<[u8; 32]>,
    kind: &str,
    message: &Message,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let recipient = message.recipient();
    if store::mail::has_deferred(conn, &recipient, kind, now).await? {
        return Ok(false);
    }
    let latest = store::mail::latest_written(conn, &recipient, kind)
        .await?
        .unwrap_or(now);
    // Written for the hour it goes out in: that hour's limit counts it.
    let at = (latest + chrono::Duration::hours(1)).max(now);
    write(conn, kek, kind, &recipient, message, at).await?;
    Ok(true)
}

/// Associated data of sealed outbox messages.
const OUTBOX_CONTEXT: &[u8] = b"mail_outbox";

pub fn unseal(kek: &Secret<[u8; 32]>, sealed: &[u8]) -> Option<Message> {
    let plaintext = crypto::open(kek, OUTBOX_CONTEXT, sealed)?;
    serde_json::from_slice(plaintext.expose()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_come_from_the_configured_base_only() {
        let message = Message::new(
            MailKind::ResetPassword,
            "a@example.com",
            "https://id.example.com/",
            "abc_DEF-123",
            "30 minutes",
        );
        assert!(
            message
                .text
                .contains("https://id.example.com/reset-password?token=abc_DEF-123")
        );
        assert!(
            message
                .html
                .contains("href=\"https://id.example.com/reset-password?token=abc_DEF-123\"")
        );
        assert!(!format!("{message:?}").contains("abc_DEF"));
        let kek = Secret::new([3u8; 32]);
        let sealed = crypto::seal(&kek, OUTBOX_CONTEXT, &serde_json::to_vec(&message).unwrap());
        assert_eq!(unseal(&kek, &sealed).unwrap().text, message.text);
        assert!(unseal(&Secret::new([4u8; 32]), &sealed).is_none());
    }

    #[test]
    fn a_new_device_notice_says_when_and_from_where_and_escapes_what_it_shows() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:20:30Z").unwrap().to_utc();
        let facts = SignInFacts {
            at,
            address: Some("203.0.113.7"),
            network: "203.0.113.0/24",
            family: "<b>Firefox</b> on Linux",
            sessions_url: Some("https://app.example.com/account/sessions"),
        };
        let message = Message::new_device("a@example.com", &facts);
        assert!(message.text.contains("When: 2026-12-02 10:20:30 UTC"));
        assert!(message.text.contains("Address: 203.0.113.7 (network 203.0.113.0/24)"));
        assert!(message.text.contains("Device: <b>Firefox</b> on Linux"));
        assert!(message.text.contains("https://app.example.com/account/sessions"));
        assert!(message.html.contains("&lt;b&gt;Firefox&lt;/b&gt;"));
        assert!(!message.html.contains("<b>"));
        let without = Message::new_device(
            "a@example.com",
            &SignInFacts {
                sessions_url: None,
                ..facts
            },
        );
        assert!(without.text.contains("change your password at once"));
    }
}
