//! Delivery of outbox mail: over SMTP to `AUTHD_SMTP_URL` (plain, STARTTLS with `?tls=required`,
//! or TLS with `smtps://`; credentials in the URL), or, without it, as `.eml` files under
//! `AUTHD_MAIL_DIR`.

use super::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Why a mail was not sent; a permanent failure (a 5xx reply, a bad address) is not retried.
#[derive(Debug)]
pub struct SendError {
    pub permanent: bool,
    pub message: String,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(PathBuf),
}

impl Mailer {
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        match &settings.mail.smtp_url {
            Some(url) => {
                // A connection per mail (lettre's pool is off): a send cut off by its timeout
                // takes its connection along, so no later send reads the replies it left.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| anyhow::anyhow!("configuration error: AUTHD_SMTP_URL: {e}"))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => Ok(Self::Directory(settings.mail.dir.clone())),
        }
    }

    /// Sends one message; the error is a short description for the outbox row and the log
    /// (never the message itself).
    pub async fn send(&self, from: &str, message: &Message, id: i64, kind: &str) -> Result<(), SendError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| SendError::permanent(format!("AUTHD_MAIL_FROM: {e}")))?;
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|e| SendError::permanent(format!("recipient: {e}")))?;
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(message.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| SendError::permanent(format!("building the message: {e}")))?;
        match self {
            Self::Smtp(transport) => transport.send(email).await.map(drop).map_err(|e| {
                let text: String = without_addresses(&format!("SMTP: {e}")).chars().take(300).collect();
                if e.is_permanent() {
                    SendError::permanent(text)
                } else {
                    SendError::transient(text)
                }
            }),
            Self::Directory(dir) => {
                // Written aside, then renamed: a reader never sees half a mail.
                let path = dir.join(format!("{id:010}-{kind}.eml"));
                let partial = dir.join(format!(".{id:010}-{kind}.eml.partial"));
                let (target, bytes) = (dir.clone(), email.formatted());
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&target)?;
                    std::fs::write(&partial, bytes)?;
                    std::fs::rename(&partial, &path)
                })
                .await
                .map_err(|e| SendError::transient(e.to_string()))?
                .map_err(|e| SendError::transient(format!("writing to {}: {e}", dir.display())))
            }
        }
    }
}

/// `text` with every word that holds an `@` replaced: servers often repeat the recipient in
/// their refusals, and this text goes to the outbox row and the log.
fn without_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| if word.contains('@') { "<address>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn smtp_errors_lose_the_addresses_they_repeat() {
        assert_eq!(
            super::without_addresses("SMTP: permanent error (550): 5.1.1 <ann@example.com>: user unknown"),
            "SMTP: permanent error (550): 5.1.1 <address> user unknown"
        );
    }
}
