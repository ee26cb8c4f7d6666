//! Who the client is, by address: the TCP peer, or, when the peer is one of
//! the operator's load balancers (`--trusted-proxies`), the rightmost
//! address in `X-Forwarded-For` that is not itself a trusted proxy (so a
//! client cannot choose its address by sending the header itself). Limits
//! group IPv6 clients by /64, the usual size of one customer's network.

use crate::fields::{visible, Fields};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The client address of a request (a request extension set by the serve
/// loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The key limits count under: the address, or its /64 for IPv6.
    pub fn rate_key(self) -> IpAddr {
        rate_key(self.0)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv4 as is; IPv6 masked to its /64 (IPv4-mapped IPv6 as IPv4).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match unmapped(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The operator's proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Parse CIDRs (`10.0.0.0/8`, `::1/128`; a bare address is one host).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let nets = list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("not a CIDR or address: {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(Arc::new(nets)))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client behind `peer` given the request's headers: the nearest
    /// `X-Forwarded-For` hop that is not a trusted proxy. The walk stops at
    /// the first hop that is not an address (what lies left of it was
    /// written by whoever sent the request, not by a proxy we trust); the
    /// client is then the trusted proxy that recorded it.
    pub fn client_ip(&self, peer: IpAddr, headers: &impl Fields) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<Option<IpAddr>> = headers
            .values_of(&X_FORWARDED_FOR)
            .flat_map(|v| match visible(v) {
                Some(v) => v.split(',').map(parse_hop).collect::<Vec<_>>(),
                None => vec![None],
            })
            .collect();
        let mut nearest = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                None => return nearest,
                Some(ip) if !self.contains(ip) => return ip,
                Some(ip) => nearest = ip,
            }
        }
        peer
    }
}

/// One `X-Forwarded-For` entry as an address (`ip`, or `ip:port` as some
/// proxies write it); `None` when it is not one.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", http::HeaderValue::from_static(v));
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // Straight from the internet: the header is the client's own words.
        assert_eq!(t.client_ip(stranger, &xff("1.2.3.4")), stranger);
        // Through the balancer: the rightmost untrusted hop, not a spoof.
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, 198.51.100.7, 10.9.9.9")),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(t.client_ip(lb, &http::HeaderMap::new()), lb);
        assert!(TrustedProxies::parse(&["nonsense".into()]).is_err());
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn an_unparseable_hop_ends_the_walk_at_the_proxy_that_recorded_it() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client wrote `6.6.6.6, garbage` itself: 6.6.6.6 is not its
        // address (before, the walk skipped the garbage and took it).
        assert_eq!(t.client_ip(lb, &xff("6.6.6.6, garbage")), lb);
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, garbage, 10.9.9.9")),
            ip("10.9.9.9")
        );
        assert_eq!(t.client_ip(lb, &xff("6.6.6.6, , 10.9.9.9")), ip("10.9.9.9"));
        // A real client right of the garbage is still found.
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, garbage, 198.51.100.7")),
            ip("198.51.100.7")
        );
        // `ip:port`, as some proxies write it, is an address.
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, 198.51.100.7:4711")),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, [2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        // A header line that is not text is a hop that is not an address.
        let mut h = xff("6.6.6.6");
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
        );
        assert_eq!(t.client_ip(lb, &h), lb);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(rate_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
