//! Where each device's content lives: one origin per device, from a
//! template such as `https://{device}.devices.example.net`. This module owns
//! parsing the template, naming a device's origin, recognising a device
//! host in a request's `Host`, and the CSP source that matches them all.

use edge_core::DeviceId;

/// The checked device-origin template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOrigins {
    scheme: String,
    /// Lowercase host after `{device}.`, without a port.
    suffix: String,
    /// Explicit non-default port, if any.
    port: Option<u16>,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// Split `host[:port]` (no IPv6: device hosts are DNS names).
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    match authority.bytes().rposition(|b| b == b':') {
        Some(at) => Some((&authority[..at], Some(authority[at + 1..].parse().ok()?))),
        None => Some((authority, None)),
    }
}

impl DeviceOrigins {
    /// Parse `scheme://{device}.suffix[:port]`; `{device}` must be the whole
    /// leftmost label.
    pub fn parse(template: &str) -> Result<Self, String> {
        let err = || {
            format!("device origin template must look like https://{{device}}.devices.example.net[:port], not {template:?}")
        };
        let (scheme, rest) = template.split_once("://").ok_or_else(err)?;
        if scheme != "http" && scheme != "https" {
            return Err(err());
        }
        let rest = rest.strip_prefix("{device}.").ok_or_else(err)?;
        let (suffix, port) = split_host_port(rest).ok_or_else(err)?;
        let valid_suffix = !suffix.is_empty()
            && suffix.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_suffix {
            return Err(err());
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            suffix: suffix.to_ascii_lowercase(),
            port: port.filter(|p| *p != default_port(scheme)),
        })
    }

    /// The development default for a loopback console: `{device}.localhost`
    /// with the console's scheme and port (browsers resolve `*.localhost`
    /// to loopback). `None` for any other console host: production must
    /// name its own device domain.
    pub fn for_loopback_console(public_origin: &str) -> Option<Self> {
        let url = url::Url::parse(public_origin).ok()?;
        let loopback = match url.host()? {
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        };
        if !loopback {
            return None;
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Self::parse(&format!("{}://{{device}}.localhost{port}", url.scheme())).ok()
    }

    fn port_suffix(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    /// `scheme://<device>.suffix[:port]`.
    pub fn origin_of(&self, device: DeviceId) -> String {
        format!(
            "{}://{device}.{}{}",
            self.scheme,
            self.suffix,
            self.port_suffix()
        )
    }

    /// The device whose origin a request's `Host` names, if any.
    pub fn device_of_host(&self, host: &str) -> Option<DeviceId> {
        let (name, port) = split_host_port(host)?;
        if port.filter(|p| *p != default_port(&self.scheme)) != self.port {
            return None;
        }
        // `label.suffix`, the suffix in any case, without copying the host
        // (this runs for every request the proxy's lane reads).
        let label_len = name.len().checked_sub(self.suffix.len() + 1)?;
        let (label, rest) = name.split_at_checked(label_len)?;
        let suffix = rest.strip_prefix('.')?;
        if !suffix.eq_ignore_ascii_case(&self.suffix) {
            return None;
        }
        if label.bytes().any(|b| b.is_ascii_uppercase()) {
            label.to_ascii_lowercase().parse().ok()
        } else {
            label.parse().ok()
        }
    }

    /// A CSP source matching every device origin (`scheme://*.suffix[:port]`).
    pub fn csp_source(&self) -> String {
        format!("{}://*.{}{}", self.scheme, self.suffix, self.port_suffix())
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_and_hosts_recognised() {
        let o = DeviceOrigins::parse("https://{device}.Devices.example.net").unwrap();
        let d = DeviceId::new();
        assert_eq!(o.origin_of(d), format!("https://{d}.devices.example.net"));
        assert_eq!(
            o.device_of_host(&format!("{d}.devices.example.net")),
            Some(d)
        );
        assert_eq!(
            o.device_of_host(&format!(
                "{}.DEVICES.example.net:443",
                d.to_string().to_uppercase()
            )),
            Some(d)
        );
        assert_eq!(
            o.device_of_host(&format!("{d}.devices.example.net:8443")),
            None
        );
        assert_eq!(
            o.device_of_host(&format!("x.{d}.devices.example.net")),
            None
        );
        assert_eq!(o.device_of_host("devices.example.net"), None);
        for not_a_device in [
            String::new(),
            ".devices.example.net".to_owned(),
            format!("{d}devices.example.net"),
            format!("{d}.devices.example.net."),
            format!("{d}.devices.example.net:"),
            format!("{d}é.devices.example.net"),
            format!("{d}.dévices.example.net"),
            "é".repeat(30),
        ] {
            assert_eq!(o.device_of_host(&not_a_device), None, "{not_a_device}");
        }
        assert_eq!(o.device_of_host(&format!("{d}.evil.net")), None);
        assert_eq!(o.csp_source(), "https://*.devices.example.net");
        for bad in [
            "https://devices.example.net",
            "ftp://{device}.x.net",
            "https://x{device}.example.net",
            "https://{device}.ex ample.net",
            "https://{device}.x.net/path",
        ] {
            assert!(DeviceOrigins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_consoles_get_localhost_device_origins() {
        let o = DeviceOrigins::for_loopback_console("http://127.0.0.1:4000").unwrap();
        let d = DeviceId::new();
        assert_eq!(o.origin_of(d), format!("http://{d}.localhost:4000"));
        assert_eq!(o.device_of_host(&format!("{d}.localhost:4000")), Some(d));
        assert!(DeviceOrigins::for_loopback_console("http://localhost:3721").is_some());
        assert!(DeviceOrigins::for_loopback_console("https://console.example.com").is_none());
    }
}
