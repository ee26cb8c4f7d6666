//! Command line of the agent and its checked settings.

use clap::{Args, Parser, Subcommand};
use edge_core::telemetry::LogFormat;
use std::path::PathBuf;
use std::time::Duration;

/// edge-agent: keeps this box's tunnel to the cloud relay open.
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human or json.
    #[arg(long, global = true, env = "EDGE_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the relay and serve streams until stopped.
    Run(RunArgs),
    /// Pair this box with a user's account using a one-time pairing code.
    Pair(PairArgs),
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The api-server's base URL (e.g. https://cloud.example.com).
    #[arg(long, env = "EDGE_AGENT_SERVER")]
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
        default_value = "data/agent/credential"
    )]
    pub credential_file: PathBuf,
    /// Replace an existing credential file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Relay tunnel URL.
    #[arg(
        long,
        env = "EDGE_AGENT_RELAY",
        default_value = "ws://127.0.0.1:3800/tunnel"
    )]
    pub relay: String,
    /// Local service each stream is piped to (host:port).
    #[arg(long, env = "EDGE_AGENT_TARGET", default_value = "127.0.0.1:8080")]
    pub target: String,
    /// File holding the device credential (mode 0600). EDGE_AGENT_TOKEN, when
    /// set, is used instead.
    #[arg(
        long,
        env = "EDGE_AGENT_CREDENTIAL_FILE",
        default_value = "data/agent/credential"
    )]
    pub credential_file: PathBuf,
    /// First reconnect delay, in milliseconds.
    #[arg(long, env = "EDGE_AGENT_BACKOFF_MIN_MS", default_value_t = 100)]
    pub backoff_min_ms: u64,
    /// Largest reconnect delay, in milliseconds.
    #[arg(long, env = "EDGE_AGENT_BACKOFF_MAX_MS", default_value_t = 15_000)]
    pub backoff_max_ms: u64,
}

/// Checked settings of `edge-agent run`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub relay: String,
    pub target: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A relay that sends nothing for this long is considered gone.
    pub idle_timeout: Duration,
    /// A session that lasted this long resets the backoff.
    pub stable_after: Duration,
}

impl AgentSettings {
    pub fn new(relay: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            relay: relay.into(),
            target: target.into(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(15),
            idle_timeout: tunnel::contract::IDLE_TIMEOUT + Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
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
        let mut s = AgentSettings::new(&self.relay, &self.target);
        s.backoff_min = Duration::from_millis(self.backoff_min_ms);
        s.backoff_max = Duration::from_millis(self.backoff_max_ms);
        Ok(s)
    }
}
