//! The stream preamble (ADR 026), an extension of the wire contract that
//! only agents which ask for it ever see. An agent offers it at the
//! upgrade (`Edge-Capabilities: preamble/1`); a relay that knows it
//! answers the `101` with the same header, and from then on every stream
//! it opens on that session starts with one line naming the stream's
//! target, `EDGE/1 service\n` (the box's local service, what every stream
//! was before) or `EDGE/1 agent\n` (the agent's own endpoint: host
//! metrics and the agent's figures). A device that did not offer it (Go
//! devices in the field, older agents) gets plain streams, byte for byte
//! as before.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The upgrade header that offers and accepts capabilities.
pub const CAPABILITIES_HEADER: &str = "edge-capabilities";
/// The preamble capability.
pub const PREAMBLE_V1: &str = "preamble/1";
/// The longest preamble line read.
pub const MAX_LINE: usize = 128;

/// Where a stream goes on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The box's local service (the agent's `--target`).
    Service,
    /// The agent's own endpoint.
    Agent,
}

impl Target {
    /// The line a stream to this target starts with.
    pub fn line(self) -> &'static [u8] {
        match self {
            Self::Service => b"EDGE/1 service\n",
            Self::Agent => b"EDGE/1 agent\n",
        }
    }
}

/// Whether a comma-separated capability list names `cap`.
pub fn offers(list: &str, cap: &str) -> bool {
    list.split(',').any(|c| c.trim().eq_ignore_ascii_case(cap))
}

/// Why a preamble could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("stream preamble: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream preamble: the line is missing or longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("stream preamble: unknown target")]
    UnknownTarget,
}

/// Read a stream's preamble: its target, and the bytes that followed the
/// line in the same read (the start of the stream's payload).
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Target, Vec<u8>), PreambleError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let target = match &buf[..=end] {
                l if l == Target::Service.line() => Target::Service,
                l if l == Target::Agent.line() => Target::Agent,
                _ => return Err(PreambleError::UnknownTarget),
            };
            return Ok((target, buf.split_off(end + 1)));
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
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"EDGE/1 shell\n",
            b"",
            &[b'x'; 300],
        ] {
            let mut input = bad;
            assert!(read(&mut input).await.is_err(), "{bad:?}");
        }
        assert!(offers("gzip, Preamble/1", PREAMBLE_V1));
        assert!(!offers("preamble/2", PREAMBLE_V1));
    }
}
