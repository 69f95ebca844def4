//! Delivery of outbox mail: over SMTP to `AUTHD_SMTP_URL` (plain, STARTTLS with `?tls=required`,
//! or TLS with `smtps://`; credentials in the URL), or, without it, as `.eml` files under
//! `AUTHD_MAIL_DIR`.

use super::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(PathBuf),
}

impl Mailer {
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        match &settings.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| anyhow::anyhow!("configuration error: AUTHD_SMTP_URL: {e}"))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => Ok(Self::Directory(settings.mail_dir.clone())),
        }
    }

    /// Sends one message; the error is a short description for the outbox row and the log
    /// (never the message itself).
    pub async fn send(&self, from: &str, message: &Message, id: i64, kind: &str) -> Result<(), String> {
        let from: Mailbox = from.parse().map_err(|e| format!("AUTHD_MAIL_FROM: {e}"))?;
        let to: Mailbox = message.to.parse().map_err(|e| format!("recipient: {e}"))?;
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(message.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| format!("building the message: {e}"))?;
        match self {
            Self::Smtp(transport) => transport.send(email).await.map(drop).map_err(|e| format!("SMTP: {e}")),
            Self::Directory(dir) => {
                let path = dir.join(format!("{id:010}-{kind}.eml"));
                let (target, bytes) = (dir.clone(), email.formatted());
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&target)?;
                    std::fs::write(&path, bytes)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("writing {}: {e}", dir.display()))
            }
        }
    }
}
