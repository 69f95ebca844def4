//! Client addresses behind proxies: `x-forwarded-for` is believed only from `AUTHD_TRUSTED_PROXIES`.

use std::net::IpAddr;

/// An address block such as `10.0.0.0/8` or `::1/128` (a bare address is a block of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), self.prefix, 32)
                    == masked(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - u32::from(prefix))
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last
/// `x-forwarded-for` entry that is not itself a trusted proxy. Anything else in the header,
/// which the client could have written, is ignored.
pub fn client_address(peer: Option<IpAddr>, forwarded_for: Option<&str>, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for entry in forwarded_for.unwrap_or_default().rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

/// Every `x-forwarded-for` line, in order, as one list: a proxy may add its own line rather than
/// extend the client's, and the client's line comes first. A line that is not text stands as an
/// entry that is no address, so the walk from the right stops there.
fn forwarded_for(headers: &http::HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|line| line.to_str().unwrap_or("invalid"))
        .collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

/// The caller's address (through `trusted` proxies, see [`client_address`]) and user agent (at
/// most 512 characters, no control characters), as every entry point records them.
pub fn client_info(peer: Option<IpAddr>, headers: &http::HeaderMap, trusted: &[Cidr]) -> crate::identity::ClientInfo {
    let forwarded = forwarded_for(headers);
    crate::identity::ClientInfo {
        ip_address: client_address(peer, forwarded.as_deref(), trusted).map(|ip| ip.to_string()),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect()),
    }
}

/// The bucket of per-address rate limits for a client address: the address itself for IPv4, its
/// /64 for IPv6 (one host commonly holds a whole /64, so single addresses would be free to
/// rotate), and `unknown` when there is none.
pub fn address_bucket(address: Option<&str>) -> String {
    match address.and_then(|a| a.parse::<IpAddr>().ok()).map(canonical) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let network = std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1));
            format!("{network}/64")
        }
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forwarded_line_counts_and_the_last_ones_are_the_proxies() {
        let trusted = [Cidr::parse("127.0.0.1/32").unwrap()];
        let peer = Some("127.0.0.1".parse().unwrap());
        let mut headers = http::HeaderMap::new();
        // The client wrote the first line; the trusted proxy added its own below it.
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.append("x-forwarded-for", "198.51.100.4".parse().unwrap());
        let client = client_info(peer, &headers, &trusted);
        assert_eq!(client.ip_address.as_deref(), Some("198.51.100.4"));
        // A line that is not text ends the walk there.
        let mut headers = http::HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.append("x-forwarded-for", http::HeaderValue::from_bytes(b"\xff").unwrap());
        let client = client_info(peer, &headers, &trusted);
        assert_eq!(client.ip_address.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn blocks_and_forwarding() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("::1").unwrap()];
        assert!(trusted[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!trusted[0].contains("11.0.0.1".parse().unwrap()));
        assert!(trusted[0].contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // Through two trusted proxies; a forged left-most entry is ignored.
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("6.6.6.6, 198.51.100.7, 10.0.0.2"), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(client_address(ip("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(address_bucket(Some("2001:db8:1:2::5")), "2001:db8:1:2::/64");
        assert_eq!(
            address_bucket(Some("2001:db8:1:2:ffff:1:2:3")),
            address_bucket(Some("2001:db8:1:2::9"))
        );
        assert_ne!(
            address_bucket(Some("2001:db8:1:3::1")),
            address_bucket(Some("2001:db8:1:2::1"))
        );
        assert_eq!(address_bucket(Some("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(address_bucket(Some("192.0.2.1")), "192.0.2.1");
        assert_eq!(address_bucket(None), "unknown");
    }
}
