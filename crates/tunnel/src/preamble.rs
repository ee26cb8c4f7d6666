//! The stream preamble (ADR 026, ADR 027), an extension of the wire
//! contract that only agents which ask for it ever see. An agent offers it
//! at the upgrade (`Edge-Capabilities: preamble/1`); a relay that knows it
//! answers the `101` with the same header, and from then on every stream
//! it opens on that session starts with one line naming the stream's
//! target: `EDGE/1 service\n` (the box's local service, what every stream
//! was before), `EDGE/1 agent\n` (the agent's own endpoint: host metrics
//! and the agent's figures) or `EDGE/1 tcp HOST:PORT\n` (a TCP service the
//! agent's allow-list names, for port forwarding). A `tcp` stream is
//! answered by the agent with one line before any payload: `EDGE/1 ok\n`,
//! or `EDGE/1 refused CODE\n` and the end of the stream. A device that did
//! not offer the capability (Go devices in the field, older agents) gets
//! plain streams, byte for byte as before.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The upgrade header that offers and accepts capabilities.
pub const CAPABILITIES_HEADER: &str = "edge-capabilities";
/// The preamble capability.
pub const PREAMBLE_V1: &str = "preamble/1";
/// The burst-window capability (ADR 044): the agent's WebSocket messages
/// stay far below the relay's 1 MiB cap however large a yamux frame is
/// (this agent writes at most 64 KiB per message), so the relay may grant
/// its streams windows beyond 1 MiB. A device that writes each frame as
/// one message (Go devices in the field) must never be granted more than
/// the cap, and is not: it does not offer this.
pub const BURST_V1: &str = "burst/1";
/// What this project's agent offers at the upgrade.
pub const AGENT_OFFER: &str = "preamble/1, burst/1";
/// The longest preamble line read.
pub const MAX_LINE: usize = 128;
/// The longest host name a `tcp` target may carry.
pub const MAX_HOST: usize = 100;

/// A TCP service on the device's side: a host (a name or an IP literal)
/// and a port. Parsed from `host:port` or `[v6]:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpTarget {
    host: String,
    port: u16,
}

impl TcpTarget {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to connect to (`host:port`, a v6 literal bracketed).
    pub fn addr(&self) -> String {
        self.to_string()
    }
}

/// Why a `host:port` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a target is host:port (a name, an IPv4 address or a bracketed IPv6 address, and a port 1-65535)")]
pub struct BadTarget;

impl FromStr for TcpTarget {
    type Err = BadTarget;

    fn from_str(s: &str) -> Result<Self, BadTarget> {
        let (host, port) = s.rsplit_once(':').ok_or(BadTarget)?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadTarget);
        }
        let port: u16 = port.parse().map_err(|_| BadTarget)?;
        if port == 0 {
            return Err(BadTarget);
        }
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| BadTarget)?;
            v6
        } else {
            let name_ok = !host.is_empty()
                && host.len() <= MAX_HOST
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
                && !host.starts_with(['-', '.']);
            if !name_ok {
                return Err(BadTarget);
            }
            host
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for TcpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a stream goes on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The box's local service (the agent's `--target`).
    Service,
    /// The agent's own endpoint.
    Agent,
    /// A TCP service the agent's allow-list names.
    Tcp(TcpTarget),
}

const SERVICE_LINE: &[u8] = b"EDGE/1 service\n";
const AGENT_LINE: &[u8] = b"EDGE/1 agent\n";
const TCP_PREFIX: &[u8] = b"EDGE/1 tcp ";

impl Target {
    /// The line a stream to this target starts with.
    pub fn line(&self) -> Cow<'static, [u8]> {
        match self {
            Self::Service => Cow::Borrowed(SERVICE_LINE),
            Self::Agent => Cow::Borrowed(AGENT_LINE),
            Self::Tcp(t) => Cow::Owned(format!("EDGE/1 tcp {t}\n").into_bytes()),
        }
    }
}

/// Whether a comma-separated capability list names `cap`.
pub fn offers(list: &str, cap: &str) -> bool {
    list.split(',').any(|c| c.trim().eq_ignore_ascii_case(cap))
}

/// Why a preamble (or a `tcp` stream's answer) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("stream preamble: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream preamble: the line is missing or longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("stream preamble: unknown target")]
    UnknownTarget,
}

/// Read one `\n`-ended line of at most [`MAX_LINE`] bytes: the line, and
/// the bytes that followed it in the same read.
async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Vec<u8>, Vec<u8>), PreambleError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            if end >= MAX_LINE {
                return Err(PreambleError::TooLong);
            }
            let rest = buf.split_off(end + 1);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_LINE {
            return Err(PreambleError::TooLong);
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(PreambleError::TooLong);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Read a stream's preamble: its target, and the bytes that followed the
/// line in the same read (the start of the stream's payload).
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Target, Vec<u8>), PreambleError> {
    let (line, rest) = read_line(r).await?;
    let target = match line.as_slice() {
        SERVICE_LINE => Target::Service,
        AGENT_LINE => Target::Agent,
        l if l.starts_with(TCP_PREFIX) => {
            let addr = std::str::from_utf8(&l[TCP_PREFIX.len()..l.len() - 1])
                .map_err(|_| PreambleError::UnknownTarget)?;
            Target::Tcp(addr.parse().map_err(|_| PreambleError::UnknownTarget)?)
        }
        _ => return Err(PreambleError::UnknownTarget),
    };
    Ok((target, rest))
}

/// Why an agent refused a `tcp` stream (the code on its answer line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent's allow-list does not name the target.
    NotAllowed,
    /// The target did not accept the connection in time.
    Unreachable,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAllowed => "target_not_allowed",
            Self::Unreachable => "target_unreachable",
        }
    }
}

const OK_LINE: &[u8] = b"EDGE/1 ok\n";
const REFUSED_PREFIX: &[u8] = b"EDGE/1 refused ";

/// Agent side: answer a `tcp` stream (`None`: connected).
pub async fn write_answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    refusal: Option<Refusal>,
) -> std::io::Result<()> {
    match refusal {
        None => w.write_all(OK_LINE).await?,
        Some(r) => {
            w.write_all(format!("EDGE/1 refused {}\n", r.code()).as_bytes())
                .await?
        }
    }
    w.flush().await
}

/// Cloud side: a `tcp` stream's answer (`Err(code)`: refused, with the
/// agent's code or `target_unknown_answer`), and the payload bytes read
/// past it.
pub async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Result<Vec<u8>, String>, PreambleError> {
    let (line, rest) = read_line(r).await?;
    if line == OK_LINE {
        return Ok(Ok(rest));
    }
    let code = line
        .strip_prefix(REFUSED_PREFIX)
        .and_then(|c| std::str::from_utf8(&c[..c.len() - 1]).ok())
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .unwrap_or("target_unknown_answer");
    Ok(Err(code.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_line_names_the_target_and_the_rest_is_payload() {
        let mut input: &[u8] = b"EDGE/1 agent\nGET /metrics HTTP/1.1\r\n";
        let (target, rest) = read(&mut input).await.unwrap();
        assert_eq!(target, Target::Agent);
        assert!(rest.starts_with(b"GET /metrics"));
        let mut input: &[u8] = b"EDGE/1 service\n";
        assert_eq!(read(&mut input).await.unwrap(), (Target::Service, vec![]));
        let mut input: &[u8] = b"EDGE/1 tcp 127.0.0.1:22\nSSH-2.0";
        let (target, rest) = read(&mut input).await.unwrap();
        assert_eq!(target, Target::Tcp("127.0.0.1:22".parse().unwrap()));
        assert_eq!(rest, b"SSH-2.0");
    }

    #[tokio::test]
    async fn every_target_reads_back_from_its_line() {
        for t in [
            Target::Service,
            Target::Agent,
            Target::Tcp("Camera.local:554".parse().unwrap()),
            Target::Tcp("[::1]:8080".parse().unwrap()),
        ] {
            let line = t.line();
            let mut input: &[u8] = &line;
            assert_eq!(read(&mut input).await.unwrap().0, t);
        }
        let t: TcpTarget = "[fe80::1]:22".parse().unwrap();
        assert_eq!(t.addr(), "[fe80::1]:22");
        assert_eq!(t.host(), "fe80::1");
    }

    #[test]
    fn targets_are_host_and_port_only() {
        for good in ["127.0.0.1:22", "box:1", "a-b.c_d:65535", "[::1]:22"] {
            assert!(good.parse::<TcpTarget>().is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+22",
            ":22",
            "a b:22",
            "host:22\n",
            "-host:22",
            "::1:22",
            "[zz]:22",
            "user@host:22",
            &format!("{}:22", "a".repeat(MAX_HOST + 1)),
        ] {
            assert!(bad.parse::<TcpTarget>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"EDGE/1 shell\n",
            b"EDGE/1 tcp nohost\n",
            b"EDGE/1 tcp a b:22\n",
            b"",
            &[b'x'; 300],
        ] {
            let mut input = bad;
            assert!(read(&mut input).await.is_err(), "{bad:?}");
        }
        assert!(offers("gzip, Preamble/1", PREAMBLE_V1));
        assert!(!offers("preamble/2", PREAMBLE_V1));
    }

    #[tokio::test]
    async fn answers_round_trip_and_odd_ones_read_as_unknown() {
        let mut out = Vec::new();
        write_answer(&mut out, None).await.unwrap();
        out.extend_from_slice(b"payload");
        let mut input: &[u8] = &out;
        assert_eq!(
            read_answer(&mut input).await.unwrap(),
            Ok(b"payload".to_vec())
        );
        for r in [Refusal::NotAllowed, Refusal::Unreachable] {
            let mut out = Vec::new();
            write_answer(&mut out, Some(r)).await.unwrap();
            let mut input: &[u8] = &out;
            assert_eq!(
                read_answer(&mut input).await.unwrap(),
                Err(r.code().to_owned())
            );
        }
        let mut input: &[u8] = b"EDGE/1 refused <script>\n";
        assert_eq!(
            read_answer(&mut input).await.unwrap(),
            Err("target_unknown_answer".to_owned())
        );
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert!(read_answer(&mut input).await.unwrap().is_err());
    }
}
