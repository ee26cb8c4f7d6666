//! Where a URL points: the one loopback rule behind every "plain text only
//! to this machine" check (the agent's relay and server URLs, the OIDC
//! issuer, the `edge` CLI's server).

/// Whether `url`'s host is loopback (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_names_and_addresses_only() {
        for yes in [
            "http://localhost:1",
            "http://LOCALHOST",
            "http://127.0.0.9",
            "http://[::1]:2",
        ] {
            assert!(is_loopback_url(&url::Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "http://10.0.0.1",
            "http://example.com",
            "http://[::2]",
            "file:///x",
        ] {
            assert!(!is_loopback_url(&url::Url::parse(no).unwrap()), "{no}");
        }
    }
}
