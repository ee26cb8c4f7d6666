//! Command line of the agent and its checked settings.

use clap::{Args, Parser, Subcommand};
use edge_core::telemetry::LogFormat;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// edge-agent: keeps this box's tunnel to the cloud relay open.
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human or json.
    #[arg(
        long,
        global = true,
        env = "EDGE_LOG_FORMAT",
        default_value = "human",
        hide_env_values = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the relay and serve streams until stopped.
    Run(RunArgs),
    /// Pair this box with a user's account using a one-time pairing code.
    Pair(PairArgs),
}

/// How the agent reaches the cloud (both subcommands).
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// PEM file with extra CA certificates to trust (a private CA), besides
    /// the built-in web PKI roots.
    #[arg(long, env = "EDGE_AGENT_CA_FILE", hide_env_values = true)]
    pub ca_file: Option<PathBuf>,
    /// Allow ws:// and http:// to addresses other than loopback. The
    /// credential and all traffic then cross the network in clear text; a
    /// warning is logged on every connect.
    #[arg(
        long,
        env = "EDGE_AGENT_INSECURE_PLAINTEXT",
        default_value_t = false,
        hide_env_values = true
    )]
    pub insecure_plaintext: bool,
}

impl TransportArgs {
    /// The TLS client config for wss:// and https://.
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, crate::AgentError> {
        edge_tls::client_config(self.ca_file.as_deref())
            .map_err(|e| crate::AgentError::Config(e.to_string()))
    }

    /// Refuse a plaintext `url` to a non-loopback host unless allowed.
    pub fn check(&self, url: &str) -> Result<(), crate::AgentError> {
        check_transport(url, self.insecure_plaintext)
    }
}

/// Whether `url` may be used: TLS (`wss`, `https`) always; plaintext (`ws`,
/// `http`) to a loopback host, or anywhere with `insecure_plaintext`.
pub fn check_transport(url: &str, insecure_plaintext: bool) -> Result<(), crate::AgentError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| crate::AgentError::Config(format!("invalid URL {url:?}: {e}")))?;
    match parsed.scheme() {
        "wss" | "https" => Ok(()),
        "ws" | "http" if insecure_plaintext || edge_core::net::is_loopback_url(&parsed) => Ok(()),
        "ws" | "http" => Err(crate::AgentError::Config(format!(
            "{url} is plaintext to a non-loopback address: use wss:// or https:// (or --insecure-plaintext)"
        ))),
        other => Err(crate::AgentError::Config(format!(
            "unsupported URL scheme {other:?}"
        ))),
    }
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The api-server's base URL (e.g. https://cloud.example.com).
    #[arg(long, env = "EDGE_AGENT_SERVER", hide_env_values = true)]
    pub server: String,
    /// The pairing code shown in the console (XXXXX-XXXXX).
    #[arg(long)]
    pub code: String,
    /// Name this box reports (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Model this box reports.
    #[arg(long)]
    pub model: Option<String>,
    /// Serial number this box reports.
    #[arg(long)]
    pub serial: Option<String>,
    /// Where to write the credential (mode 0600).
    #[arg(
        long,
        env = "EDGE_AGENT_CREDENTIAL_FILE",
        default_value = "data/agent/credential",
        hide_env_values = true
    )]
    pub credential_file: PathBuf,
    /// Replace an existing credential file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Relay tunnel URL; repeat it (or give a comma-separated list) for
    /// several relay nodes: the agent starts at a random one and moves to
    /// the next when a connect fails or a draining node refuses it.
    #[arg(
        long,
        env = "EDGE_AGENT_RELAY",
        default_value = "ws://127.0.0.1:3800/tunnel",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub relay: Vec<String>,
    /// Local service each stream is piped to (host:port).
    #[arg(
        long,
        env = "EDGE_AGENT_TARGET",
        default_value = "127.0.0.1:8080",
        hide_env_values = true
    )]
    pub target: String,
    /// Further TCP services (host:port, comma-separated) the owner may
    /// forward to through the tunnel, for example `127.0.0.1:22` for SSH
    /// or a camera's `192.168.1.20:554`. Only relays that negotiated
    /// stream preambles can ask for them (ADR 027); the `--target` service
    /// is always reachable, nothing else is by default.
    #[arg(
        long,
        env = "EDGE_AGENT_ALLOW",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub allow: Vec<String>,
    /// File holding the device credential (mode 0600). EDGE_AGENT_TOKEN, when
    /// set, is used instead.
    #[arg(
        long,
        env = "EDGE_AGENT_CREDENTIAL_FILE",
        default_value = "data/agent/credential",
        hide_env_values = true
    )]
    pub credential_file: PathBuf,
    /// First reconnect delay, in milliseconds.
    #[arg(
        long,
        env = "EDGE_AGENT_BACKOFF_MIN_MS",
        default_value_t = 100,
        hide_env_values = true
    )]
    pub backoff_min_ms: u64,
    /// Largest reconnect delay, in milliseconds.
    #[arg(
        long,
        env = "EDGE_AGENT_BACKOFF_MAX_MS",
        default_value_t = 15_000,
        hide_env_values = true
    )]
    pub backoff_max_ms: u64,
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// Checked settings of `edge-agent run`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Relay tunnel URLs, at least one.
    pub relays: Vec<String>,
    pub target: String,
    /// TCP services a `tcp` stream may reach besides `target`.
    pub allow: Vec<tunnel::preamble::TcpTarget>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A relay that sends nothing for this long is considered gone.
    pub idle_timeout: Duration,
    /// A session that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// TLS for wss:// (`None`: web PKI roots only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The operator allowed plaintext to a non-loopback relay: warn on
    /// every connect.
    pub insecure_plaintext: bool,
}

impl AgentSettings {
    pub fn new(relay: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            relays: vec![relay.into()],
            target: target.into(),
            allow: Vec::new(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(15),
            idle_timeout: tunnel::contract::IDLE_TIMEOUT + Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            tls: None,
            insecure_plaintext: false,
        }
    }
}

impl RunArgs {
    pub fn settings(&self) -> Result<AgentSettings, crate::AgentError> {
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err(crate::AgentError::Config(
                "backoff bounds must satisfy 0 < min <= max".into(),
            ));
        }
        let relays: Vec<String> = self
            .relay
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if relays.is_empty() {
            return Err(crate::AgentError::Config(
                "at least one --relay is needed".into(),
            ));
        }
        for relay in &relays {
            self.transport.check(relay)?;
        }
        let mut s = AgentSettings::new(relays[0].clone(), &self.target);
        s.relays = relays;
        s.allow = self
            .allow
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse()
                    .map_err(|e| crate::AgentError::Config(format!("--allow {a:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        s.backoff_min = Duration::from_millis(self.backoff_min_ms);
        s.backoff_max = Duration::from_millis(self.backoff_max_ms);
        s.tls = Some(self.transport.tls()?);
        s.insecure_plaintext = self.transport.insecure_plaintext;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_relays_by_repetition_or_comma_list() {
        let cli = Cli::try_parse_from([
            "edge-agent",
            "run",
            "--relay",
            "ws://127.0.0.1:1/tunnel,ws://127.0.0.1:2/tunnel",
            "--relay",
            "ws://127.0.0.1:3/tunnel",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let s = args.settings().unwrap();
        assert_eq!(
            s.relays,
            [
                "ws://127.0.0.1:1/tunnel",
                "ws://127.0.0.1:2/tunnel",
                "ws://127.0.0.1:3/tunnel"
            ]
        );
        let plain =
            Cli::try_parse_from(["edge-agent", "run", "--relay", "ws://10.0.0.9/tunnel"]).unwrap();
        let Command::Run(args) = plain.command else {
            panic!("not run")
        };
        assert!(
            args.settings().is_err(),
            "each relay's transport is checked"
        );
    }

    #[test]
    fn allowed_targets_are_checked_host_and_port_pairs() {
        let cli = Cli::try_parse_from([
            "edge-agent",
            "run",
            "--allow",
            "127.0.0.1:22, Camera:554",
            "--allow",
            "[::1]:80",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let allow: Vec<String> = args
            .settings()
            .unwrap()
            .allow
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allow, ["127.0.0.1:22", "camera:554", "[::1]:80"]);
        let bad = Cli::try_parse_from(["edge-agent", "run", "--allow", "127.0.0.1"]).unwrap();
        let Command::Run(args) = bad.command else {
            panic!("not run")
        };
        let err = args.settings().unwrap_err().to_string();
        assert!(err.contains("--allow"), "{err}");
    }

    #[test]
    fn plaintext_only_to_loopback_unless_allowed() {
        for ok in [
            "wss://relay.example.com/tunnel",
            "https://cloud.example.com",
            "ws://127.0.0.1:3800/tunnel",
            "ws://localhost:3800/tunnel",
            "http://[::1]:3721",
        ] {
            assert!(check_transport(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "ws://relay.example.com/tunnel",
            "http://10.0.0.5:3721",
            "ftp://x",
        ] {
            assert!(check_transport(bad, false).is_err(), "{bad}");
        }
        assert!(check_transport("ws://relay.example.com/tunnel", true).is_ok());
    }
}
