//! `edge-agent pair`: exchange a one-time pairing code for this box's
//! credential and write it (0600, atomically) where `edge-agent run` reads it.

use crate::config::PairArgs;
use crate::AgentError;
use edge_core::error_body::ErrorBody;
use serde::Deserialize;

#[derive(Deserialize)]
struct Paired {
    device_id: String,
    credential: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "edge-box".into())
}

/// Pair and save the credential; returns the new device id.
pub async fn pair(args: &PairArgs) -> Result<String, AgentError> {
    if args.credential_file.exists() && !args.force {
        return Err(AgentError::Pairing(format!(
            "a credential already exists at {}; use --force to replace it",
            args.credential_file.display()
        )));
    }
    let url = format!("{}/api/pairing/exchange", args.server.trim_end_matches('/'));
    let body = serde_json::json!({
        "code": args.code,
        "name": args.name.clone().unwrap_or_else(host_name),
        "model": args.model,
        "serial": args.serial,
        "agent_version": format!("{}/{}", tunnel::contract::AGENT_NAME, env!("CARGO_PKG_VERSION")),
    });
    args.transport.check(&url)?;
    if args.transport.insecure_plaintext && url.starts_with("http://") {
        tracing::warn!(server = %args.server, "pairing over plaintext HTTP (--insecure-plaintext)");
    }
    let tls = args.transport.tls()?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .map_err(|e| AgentError::Pairing(e.to_string()))?;
    let res = client.post(&url).json(&body).send().await.map_err(|e| {
        AgentError::Pairing(format!("cannot reach {}: {}", args.server, e.without_url()))
    })?;
    let status = res.status();
    if status.as_u16() == 201 {
        let paired: Paired = res
            .json()
            .await
            .map_err(|e| AgentError::Pairing(format!("unexpected answer from the server: {e}")))?;
        edge_core::secret::write_file_atomic(&args.credential_file, &paired.credential).map_err(
            |e| {
                AgentError::Pairing(format!(
                    "cannot write {}: {e}",
                    args.credential_file.display()
                ))
            },
        )?;
        return Ok(paired.device_id);
    }
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let code = res.json::<ErrorBody>().await.ok().map(|b| b.error.code);
    Err(AgentError::Pairing(match (status.as_u16(), code.as_deref()) {
        (400, Some("invalid_pairing_code")) => "the pairing code is wrong, expired, cancelled or already used; create a new one in the console".into(),
        (429, _) => format!("too many failed attempts; retry in {} s", retry.unwrap_or_else(|| "a few".into())),
        (s, c) => format!("the server refused pairing (HTTP {s}{})", c.map(|c| format!(", {c}")).unwrap_or_default()),
    }))
}
