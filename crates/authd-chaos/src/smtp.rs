//! A small SMTP server that takes every mail and logs its recipient and kind (never its body,
//! which holds a one-time link). It can be taken down (the port refuses connections, and open
//! sessions answer their next command with 421 and close) and brought back on the same port.

use crate::log::{Entry, Kind, Log};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Smtp {
    up: watch::Sender<bool>,
}

impl Smtp {
    pub async fn start(address: SocketAddr, log: Log) -> anyhow::Result<Self> {
        let (up, mut changes) = watch::channel(true);
        let sessions = changes.clone();
        let mut listener = Some(TcpListener::bind(address).await?);
        tokio::spawn(async move {
            loop {
                match &listener {
                    Some(open) => tokio::select! {
                        accepted = open.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(session(stream, log.clone(), sessions.clone()));
                            }
                        }
                        changed = changes.changed() => {
                            if changed.is_err() { return; }
                            if !*changes.borrow() { listener = None; }
                        }
                    },
                    None => {
                        if changes.changed().await.is_err() {
                            return;
                        }
                        if *changes.borrow() {
                            // The port was ours a moment ago; retry while the kernel lets go of it.
                            for _ in 0..50 {
                                if let Ok(open) = TcpListener::bind(address).await {
                                    listener = Some(open);
                                    break;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            }
        });
        Ok(Self { up })
    }

    /// Down: new connections are refused, and sessions under way end at their next command
    /// (a mail whose data has been sent is refused, not taken).
    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

async fn session(stream: TcpStream, log: Log, up: watch::Receiver<bool>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 chaos ESMTP\r\n").await?;
    let mut recipients: Vec<String> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if !*up.borrow() {
            write.write_all(b"421 chaos closing\r\n").await?;
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250-chaos\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM") {
            recipients.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            let address = line[8..].trim().trim_start_matches(':').trim().trim_matches(['<', '>']);
            recipients.push(address.to_ascii_lowercase());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go on\r\n").await?;
            let mut subject = String::new();
            while let Some(data) = lines.next_line().await? {
                if data == "." {
                    break;
                }
                if let Some(value) = data.strip_prefix("Subject: ") {
                    subject = value.to_string();
                }
            }
            let kind = if subject.contains("Reset your password") {
                "reset_password"
            } else if subject.contains("Confirm your email") {
                "verify_email"
            } else {
                "other"
            };
            if !*up.borrow() {
                write.write_all(b"421 chaos closing\r\n").await?;
                return Ok(());
            }
            let now = log.now();
            for mailbox in recipients.drain(..) {
                log.push(Entry {
                    kind: Some(Kind::Mail),
                    op: kind.into(),
                    t0: now,
                    t1: now,
                    mailbox: Some(mailbox),
                    ..Entry::default()
                });
            }
            write.write_all(b"250 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
    Ok(())
}
