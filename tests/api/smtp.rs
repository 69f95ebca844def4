//! A small SMTP server inside the test harness: it accepts any mail, keeps it, and can be down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The message with quoted-printable soft breaks and escapes undone.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let mut out = String::new();
        let bytes = joined.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(byte as char);
                i += 3;
                continue;
            }
            out.push(bytes[i] as char);
            i += 1;
        }
        out
    }

    /// The first link to `url_prefix` (e.g. `https://id.example.test/verify-email?token=`), whole.
    pub fn link(&self, url_prefix: &str) -> Option<String> {
        let text = self.decoded();
        let start = text.find(url_prefix)?;
        let rest = &text[start + url_prefix.len()..];
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        Some(format!("{url_prefix}{token}"))
    }

    /// The token of the first link to `url_prefix`.
    pub fn token(&self, url_prefix: &str) -> Option<String> {
        self.link(url_prefix).map(|link| link[url_prefix.len()..].to_string())
    }
}

pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Received>>>,
    /// While false, connections are dropped at once: the server is "down", its port still ours.
    up: Arc<std::sync::atomic::AtomicBool>,
    _tasks: JoinSet<()>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let server = Self::down().await;
        server.resume();
        server
    }

    /// A server that refuses every session until [`SmtpServer::resume`].
    pub async fn down() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an SMTP port");
        let port = listener.local_addr().unwrap().port();
        let mails: Arc<Mutex<Vec<Received>>> = Arc::default();
        let up: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let mut tasks = JoinSet::new();
        let (accept_mails, accept_up) = (mails.clone(), up.clone());
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                if accept_up.load(std::sync::atomic::Ordering::SeqCst) {
                    connections.spawn(serve(stream, accept_mails.clone()));
                }
            }
        });
        Self {
            port,
            mails,
            up,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn resume(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn to(&self, address: &str) -> Vec<Received> {
        let address = address.to_ascii_lowercase();
        self.mails
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.to.iter().any(|t| t.to_ascii_lowercase() == address))
            .cloned()
            .collect()
    }

    /// Waits for the `n`-th mail (1-based) to `address`.
    pub async fn wait_for(&self, address: &str, n: usize, within: Duration) -> Received {
        let deadline = Instant::now() + within;
        loop {
            let mails = self.to(address);
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail #{n} to {address} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A mail server that takes connections and never says a word: a send to it hangs until the
/// sender gives up, as on a server that stalls or a replica stopped mid-send.
pub struct SilentSmtp {
    pub port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl SilentSmtp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an SMTP port");
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let counted = connections.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self {
            port,
            connections,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Waits until some sender has connected.
    pub async fn wait_for_a_sender(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.connections.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "nobody connected within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(stream: TcpStream, mails: Arc<Mutex<Vec<Received>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut to = Vec::new();
    if write.write_all(b"220 localhost ESMTP authd-test\r\n").await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-localhost\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO")
            || upper.starts_with("MAIL FROM")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(
                line[8..]
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            );
            b"250 OK\r\n"
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push_str("\r\n");
            }
            mails.lock().unwrap().push(Received {
                to: std::mem::take(&mut to),
                data,
            });
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Where the links in test mail point.
pub const PUBLIC_URL: &str = "https://id.example.test";

/// An authd that mails through `smtp`, with links under [`PUBLIC_URL`]; `extra` are more settings.
pub async fn app_with_smtp(smtp: &SmtpServer, extra: &[(&str, &str)]) -> crate::helpers::TestApp {
    let url = smtp.url();
    let mut overrides = vec![
        ("AUTHD_SMTP_URL", url.as_str()),
        ("AUTHD_PUBLIC_URL", PUBLIC_URL),
        ("AUTHD_MAIL_POLL_INTERVAL", "1s"),
    ];
    overrides.extend_from_slice(extra);
    crate::helpers::spawn_app_with(&overrides).await
}

/// The start of a mailed link to `path`, up to its token.
pub fn link_prefix(path: &str) -> String {
    format!("{PUBLIC_URL}{path}?token=")
}
