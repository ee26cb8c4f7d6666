//! `edge forward` and `edge ssh`: each local connection (or standard
//! input and output) becomes one `GET /api/devices/{id}/forward` upgraded
//! to `edge-forward`, a byte pipe to the target on the box's side. A
//! refused forward prints the server's error and ends that connection
//! only; the listener keeps accepting.

use crate::api::{api_error, Api};
use crate::CliError;
use std::net::SocketAddr;
use std::str::FromStr;

/// The upgrade token the api-server answers.
const PROTOCOL: &str = "edge-forward";
/// Copy buffers each way.
const BUFFER: usize = 64 * 1024;

/// `[BIND:]LOCAL_PORT:[HOST:]PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub bind: SocketAddr,
    /// `host:port` on the box's side.
    pub target: String,
}

impl FromStr for Spec {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        let bad = || {
            CliError::Usage(format!(
                "{s:?} is not [BIND:]LOCAL_PORT:[HOST:]PORT (for example 2222:22 or 8554:192.168.1.20:554)"
            ))
        };
        let parts = split_spec(s).ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok();
        let (bind, local, host, remote) = match parts.as_slice() {
            [l, r] => ("127.0.0.1", *l, "127.0.0.1", *r),
            [l, h, r] => ("127.0.0.1", *l, *h, *r),
            [b, l, h, r] => (*b, *l, *h, *r),
            _ => return Err(bad()),
        };
        let local = port(local).ok_or_else(bad)?;
        let remote = port(remote).filter(|p| *p > 0).ok_or_else(bad)?;
        let ip: std::net::IpAddr = match bind {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            b => b.parse().map_err(|_| bad())?,
        };
        Ok(Self {
            bind: SocketAddr::new(ip, local),
            target: target(host, remote)?,
        })
    }
}

/// Split on `:` outside `[...]` (IPv6 literals).
fn split_spec(s: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(s[start..i].trim_matches(['[', ']']));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim_matches(['[', ']']));
    (depth == 0 && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

/// `host:port` as the server takes it (IPv6 bracketed).
pub fn target(host: &str, port: u16) -> Result<String, CliError> {
    if host.is_empty() || port == 0 {
        return Err(CliError::Usage("a target is a host and a port".into()));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// One forward: the upgraded connection, or the server's error.
pub async fn open(api: &Api, device: &str, target: &str) -> Result<reqwest::Upgraded, CliError> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("target", target)
        .finish();
    let req = api
        .request(
            http::Method::GET,
            &format!("/api/devices/{device}/forward?{query}"),
        )
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, PROTOCOL);
    let res = req.send().await.map_err(|e| api.unreachable(e))?;
    if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap_or_default();
        return Err(api_error(status, &body));
    }
    res.upgrade().await.map_err(|e| api.unreachable(e))
}

/// Listen on `spec.bind` and forward every connection until interrupted.
pub async fn forward(api: Api, device: String, spec: Spec) -> Result<(), CliError> {
    let listener = edge_core::listen::bind(spec.bind)
        .map_err(|e| CliError::Io(format!("cannot listen on {}: {e}", spec.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Io(e.to_string()))?;
    // The one line a script waits for: where to connect.
    println!("Forwarding {local} -> {} on device {device}", spec.target);
    let api = std::sync::Arc::new(api);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (mut conn, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                say!("edge: accept failed: {e}");
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let (api, device, target) = (api.clone(), device.clone(), spec.target.clone());
        tokio::spawn(async move {
            match open(&api, &device, &target).await {
                Ok(upgraded) => {
                    let mut remote = upgraded;
                    if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                        &mut conn,
                        &mut remote,
                        BUFFER,
                        BUFFER,
                    )
                    .await
                    {
                        say!("edge: forward for {peer} ended: {e}");
                    }
                }
                Err(e) => say!("edge: forward for {peer} refused: {e}"),
            }
        });
    }
}

/// Pipe standard input and output through one forward (`ProxyCommand`).
pub async fn stdio(api: &Api, device: &str, target: &str) -> Result<(), CliError> {
    let upgraded = open(api, device, target).await?;
    let mut remote = upgraded;
    let mut local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, BUFFER, BUFFER)
        .await
        .map(|_| ())
        .map_err(|e| CliError::Io(format!("the connection ended: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn specs_read_as_ssh_reads_them() {
        let s: Spec = "2222:22".parse().unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:2222");
        assert_eq!(s.target, "127.0.0.1:22");
        let s: Spec = "8554:192.168.1.20:554".parse().unwrap();
        assert_eq!(s.target, "192.168.1.20:554");
        let s: Spec = "0.0.0.0:0:camera:554".parse().unwrap();
        assert_eq!(s.bind.to_string(), "0.0.0.0:0");
        assert_eq!(s.target, "camera:554");
        let s: Spec = "[::1]:9000:[fe80::1]:22".parse().unwrap();
        assert_eq!(s.bind.to_string(), "[::1]:9000");
        assert_eq!(s.target, "[fe80::1]:22");
        for bad in [
            "22",
            "x:22",
            "2222:0",
            "2222:host:",
            "a:b:c:d:e",
            "1:[::1:22",
            "::",
        ] {
            assert!(bad.parse::<Spec>().is_err(), "{bad}");
        }
    }
}
