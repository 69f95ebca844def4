//! What makes a sign-in's device "new" to an account: a coarse family of its user agent (the
//! browser and system, or the program) and its client network (a /24 of IPv4, a /48 of IPv6),
//! kept only as a keyed digest per account, so the table says nothing about where anyone was.

use crate::audit::Event;
use crate::crypto::keyed_digest;
use crate::identity::ClientInfo;
use crate::mail::{self, Enqueued, Message, SignInFacts};
use crate::secret::Secret;
use crate::store::{self, Conn, Shared, StoreResult, users::UserRow};
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::sync::Arc;
use uuid::Uuid;

/// Devices kept per account, the most recently seen; one beyond them is forgotten.
const KEPT_PER_ACCOUNT: i64 = 100;
/// The live sessions, and the sign-ins in the audit trail, read (each) for the devices of an
/// account that has none on record.
const EARLIER_READ: i64 = 50;

/// What sign-ins do about new devices, from configuration.
#[derive(Clone)]
pub struct NewDevicePolicy {
    pub key_encryption_key: Secret<[u8; 32]>,
    /// `AUTHD_NEW_DEVICE_MAIL`: whether the owner is mailed.
    pub mail: bool,
    /// `AUTHD_SESSIONS_URL`: the product's page of the account's sessions, named in the mail.
    pub sessions_url: Option<String>,
    /// Wakes the delivery worker once a mail was written.
    pub mail_ready: Arc<tokio::sync::Notify>,
}

impl NewDevicePolicy {
    /// The device of a sign-in of `user` by `client`; `first`: the sign-in created the account,
    /// so its device is the account's first, not news.
    pub(crate) fn sign_in(&self, user: Uuid, client: &ClientInfo, first: bool) -> SignInDevice<'_> {
        let device = Device::of(client.user_agent.as_deref(), client.ip_address.as_deref());
        SignInDevice {
            fingerprint: device.fingerprint(&self.key_encryption_key, user),
            device,
            policy: self,
            first,
        }
    }
}

/// The device of one sign-in, noted in the transaction that opens its session (which holds the
/// account's row lock, so two sign-ins from one new device give one notice).
pub(crate) struct SignInDevice<'a> {
    policy: &'a NewDevicePolicy,
    device: Device,
    fingerprint: String,
    first: bool,
}

/// A sign-in from a device the account had not used.
pub(crate) struct NewDevice {
    /// `login.new_device`, to be written with the session.
    pub event: Event,
    /// Whether the owner gets a mail about it.
    pub mailed: bool,
}

impl SignInDevice<'_> {
    /// Notes the sign-in: whether the device is unknown to the account (then [`Self::consider`]).
    pub async fn remember(&self, conn: Shared<'_>, user: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        store::known_devices::remember(conn, user, &self.fingerprint, now).await
    }

    /// For a device `remember` found unknown: whether it is news to the owner, and then its event
    /// and, unless configured off, the mail (at most one an hour, the hour's others told of in
    /// one more when it is over; only to a verified address, which is the owner's). An account
    /// with no device on record but this one (from before devices were kept, or made by an
    /// administrator) takes those of its live sessions and of its sign-ins in the audit trail,
    /// but `session`'s (so the sessions this sign-in ended count: their sign-ins are in the
    /// trail); with none, this device is its first and no news.
    pub async fn consider(
        &self,
        conn: &mut Conn<'_>,
        user: &UserRow,
        session: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<NewDevice>> {
        if self.first {
            return Ok(None);
        }
        let news = self.news(conn, user.id, session, now).await?;
        store::known_devices::forget_beyond(conn, user.id, KEPT_PER_ACCOUNT).await?;
        if !news {
            return Ok(None);
        }
        let mail = if !self.policy.mail {
            "off"
        } else if !user.email_verified {
            "unverified_address"
        } else {
            let facts = SignInFacts {
                at: now,
                address: client.ip_address.as_deref(),
                network: &self.device.network,
                family: &self.device.family,
                sessions_url: self.policy.sessions_url.as_deref(),
            };
            let kek = &self.policy.key_encryption_key;
            let message = Message::new_device(&user.email, &facts);
            match mail::enqueue(conn, kek, mail::NEW_DEVICE, &message, 1, now).await? {
                Enqueued::Written => "written",
                // Not dropped: one notice of the hour's others goes out when the hour is over.
                Enqueued::Throttled => {
                    let later = Message::more_new_devices(&user.email, &facts);
                    if mail::defer(conn, kek, mail::NEW_DEVICE, &later, now).await? {
                        "deferred"
                    } else {
                        "throttled"
                    }
                }
            }
        };
        let event = Event::success("login.new_device")
            .user(user.id)
            .client(client)
            .detail("family", self.device.family.clone())
            .detail("network", self.device.network.clone())
            .detail("mail", mail)
            .detail("session_id", session.to_string());
        Ok(Some(NewDevice {
            event,
            mailed: mail == "written",
        }))
    }

    /// Whether this unknown device is news: not when the account has no other on record and
    /// this one was among those of its sessions and sign-ins (then noted), or there were none.
    async fn news(&self, conn: &mut Conn<'_>, user: Uuid, session: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        if store::known_devices::has_other(conn, user, &self.fingerprint).await? {
            return Ok(true);
        }
        let kek = &self.policy.key_encryption_key;
        let mut clients = store::known_devices::session_clients(conn, user, session, now, EARLIER_READ).await?;
        clients.extend(store::audit::sign_in_clients(conn, user, session, EARLIER_READ).await?);
        let mut earlier: Vec<String> = clients
            .into_iter()
            .map(|(ua, ip)| Device::of(ua.as_deref(), ip.as_deref()).fingerprint(kek, user))
            .collect();
        earlier.sort_unstable();
        earlier.dedup();
        // Room for this one too, so the trim after keeps it.
        earlier.truncate(KEPT_PER_ACCOUNT as usize - 1);
        if earlier.is_empty() {
            return Ok(false);
        }
        store::known_devices::remember_all(conn, user, &earlier, now).await?;
        Ok(!earlier.contains(&self.fingerprint))
    }

    /// After the session's transaction committed.
    pub fn committed(&self, mailed: bool) {
        if mailed {
            self.policy.mail_ready.notify_one();
        }
    }
}

/// The device of a sign-in, for comparing with the account's earlier ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// e.g. "Firefox on Linux", "curl".
    pub family: String,
    /// e.g. "203.0.113.0/24", "2001:db8:1::/48"; "unknown" without an address.
    pub network: String,
}

impl Device {
    pub fn of(user_agent: Option<&str>, ip_address: Option<&str>) -> Self {
        Self {
            family: user_agent_family(user_agent.unwrap_or_default()),
            network: network(ip_address),
        }
    }

    /// The digest stored for `user`: the same device gives the same one for that account only.
    pub fn fingerprint(&self, kek: &Secret<[u8; 32]>, user: Uuid) -> String {
        let mut value = user.as_bytes().to_vec();
        value.extend_from_slice(self.family.as_bytes());
        value.push(0);
        value.extend_from_slice(self.network.as_bytes());
        keyed_digest(kek, "authd device fingerprint v1", &value)
    }
}

/// The browser and its system, or the program's name: what a person would call their device,
/// and stable across the version updates a browser applies by itself.
pub fn user_agent_family(user_agent: &str) -> String {
    let ua = user_agent.trim();
    if ua.is_empty() {
        return "unknown".into();
    }
    let browser = first_named(
        ua,
        &[
            ("Edg/", "Edge"),
            ("OPR/", "Opera"),
            ("Firefox/", "Firefox"),
            ("Chrome/", "Chrome"),
            ("CriOS/", "Chrome"),
            ("Safari/", "Safari"),
        ],
    );
    let system = first_named(
        ua,
        &[
            ("Android", "Android"),
            ("iPhone", "iOS"),
            ("iPad", "iOS"),
            ("Windows", "Windows"),
            ("Mac OS X", "macOS"),
            ("CrOS", "ChromeOS"),
            ("Linux", "Linux"),
        ],
    );
    match (browser, system) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser.into(),
        // A program: its first product token without the version ("curl/8.5.0" → "curl"), kept
        // to letters, digits, '-' and '_' (no dots: nothing a mail reader would make a link of).
        _ => {
            let name: String = ua
                .split(['/', ' '])
                .next()
                .unwrap_or(ua)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                .take(32)
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() { "unknown".into() } else { name }
        }
    }
}

/// The name of the first marker in `table` that `ua` holds.
fn first_named(ua: &str, table: &[(&str, &'static str)]) -> Option<&'static str> {
    table
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|&(_, name)| name)
}

/// The client's network: its /24 (IPv4) or /48 (IPv6).
pub fn network(ip_address: Option<&str>) -> String {
    match ip_address.and_then(|a| a.trim().parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => network(Some(&v4.to_string())),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_named_with_their_system_and_programs_by_name() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let chrome_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(user_agent_family(firefox), "Firefox on Linux");
        assert_eq!(user_agent_family(chrome_mac), "Chrome on macOS");
        assert_eq!(user_agent_family(edge), "Edge on Windows");
        assert_eq!(user_agent_family(iphone), "Safari on iOS");
        assert_eq!(user_agent_family("curl/8.5.0"), "curl");
        assert_eq!(user_agent_family("grpc-go/1.64.0"), "grpc-go");
        assert_eq!(user_agent_family(""), "unknown");
        // What a mail reader would link is not a name.
        assert_eq!(user_agent_family("https://evil.example/1"), "https");
        assert_eq!(user_agent_family("secure-at.evil.example"), "secure-atevilexample");
        assert_eq!(user_agent_family("...///"), "unknown");
        assert_eq!(user_agent_family(&"a".repeat(100)).len(), 32);
        // A new version of the same browser is the same device.
        assert_eq!(
            user_agent_family(&firefox.replace("128.0", "129.0")),
            user_agent_family(firefox)
        );
    }

    #[test]
    fn networks_are_a_slash_24_or_a_slash_48() {
        assert_eq!(network(Some("203.0.113.7")), "203.0.113.0/24");
        assert_eq!(network(Some("2001:db8:1:2::5")), "2001:db8:1::/48");
        assert_eq!(network(Some("::ffff:198.51.100.9")), "198.51.100.0/24");
        assert_eq!(network(Some("not an address")), "unknown");
        assert_eq!(network(None), "unknown");
    }

    #[test]
    fn a_fingerprint_is_per_account_and_per_device() {
        let kek = Secret::new([7u8; 32]);
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let home = Device::of(Some("curl/8"), Some("203.0.113.7"));
        let same_network = Device::of(Some("curl/9"), Some("203.0.113.200"));
        let elsewhere = Device::of(Some("curl/8"), Some("198.51.100.1"));
        assert_eq!(home.fingerprint(&kek, alice), same_network.fingerprint(&kek, alice));
        assert_ne!(home.fingerprint(&kek, alice), elsewhere.fingerprint(&kek, alice));
        assert_ne!(home.fingerprint(&kek, alice), home.fingerprint(&kek, bob));
    }
}
