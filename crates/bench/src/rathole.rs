//! rathole, run beside us on the same box service: a server and a client
//! per transport (tcp, websocket), on loopback, with a bench-only token.

use crate::procs::{free_port, wait_port, Procs};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// The rathole binary: `--rathole PATH`, else `rathole` on `PATH`.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_owned());
    }
    crate::procs::on_path("rathole")
}

/// A rathole server and client, started.
pub struct Started {
    /// The port that reaches the box through them.
    pub port: u16,
    /// The server's and the client's process ids.
    pub pids: [u32; 2],
}

/// Start rathole with `transport` (`tcp` or `websocket`) forwarding to
/// `box_port` (its files in `dir` named after `label`).
pub async fn start(
    rathole: &Path,
    transport: &str,
    label: &str,
    box_port: u16,
    dir: &Path,
    procs: &mut Procs,
) -> Result<Started> {
    let (control, exposed) = (free_port(), free_port());
    let transport_block = |side: &str| {
        if transport == "websocket" {
            format!("[{side}.transport]\ntype = \"websocket\"\n[{side}.transport.websocket]\ntls = false\n")
        } else {
            String::new()
        }
    };
    let server = dir.join(format!("rathole-{label}-{transport}-server.toml"));
    std::fs::write(
        &server,
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\n{}[server.services.box]\ntoken = \"bench-only\"\nbind_addr = \"127.0.0.1:{exposed}\"\n",
            transport_block("server")
        ),
    )?;
    let client = dir.join(format!("rathole-{label}-{transport}-client.toml"));
    std::fs::write(
        &client,
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\n{}[client.services.box]\ntoken = \"bench-only\"\nlocal_addr = \"127.0.0.1:{box_port}\"\n",
            transport_block("client")
        ),
    )?;
    let mut pids = [0; 2];
    for (i, (mode, file)) in [("--server", &server), ("--client", &client)]
        .into_iter()
        .enumerate()
    {
        pids[i] = procs.keep(
            Command::new(rathole)
                .arg(mode)
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        )?;
        if mode == "--server" {
            wait_port(control).await;
        }
    }
    wait_port(exposed).await;
    Ok(Started {
        port: exposed,
        pids,
    })
}
