//! The `edge` command line (ADR 028): log in from a terminal with the
//! provider's device login, then use the REST API as that user with a
//! bearer session (tables for people, `-o json` for scripts), forward
//! local ports to TCP services on a box (`edge forward`) and serve as an
//! OpenSSH `ProxyCommand` (`edge ssh`). Scripts can act as a service
//! account instead (`--client-id` and `EDGE_CLIENT_SECRET`, ADR 029).
//! Every failure names the server's error code and request id.

/// A line to the user on standard error; a closed stderr (the caller
/// stopped reading) is never a reason to fail.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod api;
pub mod credentials;
pub mod forward;
pub mod login;
pub mod output;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// edge: your edge AI boxes from a terminal.
#[derive(Debug, Parser)]
#[command(name = "edge", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The cloud's base URL (default: the one you logged in to, else
    /// http://127.0.0.1:3721).
    #[arg(long, global = true, env = "EDGE_SERVER", hide_env_values = true)]
    pub server: Option<String>,
    /// Where the credential is kept (default: $XDG_CONFIG_HOME/edge or
    /// ~/.config/edge).
    #[arg(long, global = true, env = "EDGE_CONFIG_DIR", hide_env_values = true)]
    pub config_dir: Option<PathBuf>,
    /// PEM file with extra CA certificates to trust (a private CA).
    #[arg(long, global = true, env = "EDGE_CA_FILE", hide_env_values = true)]
    pub ca_file: Option<PathBuf>,
    /// Allow http:// to addresses other than loopback (the token then
    /// crosses the network in clear text).
    #[arg(long, global = true, default_value_t = false)]
    pub insecure_plaintext: bool,
    /// Act as this service account (its secret in EDGE_CLIENT_SECRET): each
    /// command gets a short-lived token with the client_credentials grant
    /// instead of using the stored login.
    #[arg(long, global = true, env = "EDGE_CLIENT_ID", hide_env_values = true)]
    pub client_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with your Member Center account (device login: open the page
    /// shown, confirm the code; or, where the provider has none, through a
    /// browser on this machine).
    Login {
        /// Sign in through a browser on this machine (loopback redirect)
        /// instead of the device login.
        #[arg(long)]
        browser: bool,
    },
    /// End this terminal's session on the server and forget it here.
    Logout,
    /// Who you are logged in as.
    Whoami(OutputArg),
    /// List your devices.
    Devices(DevicesArgs),
    /// One device.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Create a pairing code for a new box.
    PairCode(OutputArg),
    /// Issue a device a new credential (the old one stops working).
    Rotate {
        /// Device id or name.
        device: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Forward a local port to a TCP service on the box's side:
    /// `LOCAL_PORT:[HOST:]PORT` (HOST defaults to 127.0.0.1 on the box).
    Forward {
        /// Device id or name.
        device: String,
        /// `[BIND:]LOCAL_PORT:[HOST:]PORT`, as ssh -L.
        #[arg(value_name = "SPEC", required_unless_present = "local")]
        spec: Option<String>,
        /// The same, given as ssh's -L.
        #[arg(short = 'L', value_name = "SPEC", conflicts_with = "spec")]
        local: Option<String>,
    },
    /// Pipe standard input and output to the box's SSH server: use as
    /// `ssh -o ProxyCommand='edge ssh %h' user@DEVICE`.
    Ssh {
        /// Device id or name.
        device: String,
        /// The SSH server's port on the box.
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// The SSH server's host on the box's side.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show one device.
    Show {
        /// Device id or name.
        device: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    /// Only devices with this status.
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Only devices with this label (`k=v` or a bare label; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Online,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Everything that can go wrong, with the exit code it ends with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("not logged in to {0}: run `edge login`")]
    NotLoggedIn(String),
    #[error("{message} ({code}, HTTP {status}{})", request_id.as_ref().map(|r| format!(", request {r}")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    #[error("{0}")]
    Io(String),
}

impl CliError {
    /// 2 for usage, 3 when logged out, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NotLoggedIn(_) => 3,
            Self::Api { status: 401, .. } => 3,
            _ => 1,
        }
    }
}

/// The fields `edge device show` prints as a table.
const DEVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "labels",
    "model",
    "serial",
    "agent_version",
    "relay",
    "connected_since",
    "last_seen_at",
];

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = cli.global;
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "edge", &mut std::io::stdout());
            Ok(())
        }
        Command::Login { browser } => login::login(&g, browser).await,
        Command::Logout => login::logout(&g).await,
        Command::Whoami(o) => {
            let api = api::Api::acting(&g).await?;
            let me = api.get("/api/auth/me").await?;
            output::print_one(&me, o.format, &["id", "email", "name"]);
            Ok(())
        }
        Command::Devices(args) => {
            let api = api::Api::acting(&g).await?;
            let devices = api.devices(args.status, &args.label).await?;
            output::print_devices(&devices, args.output.format);
            Ok(())
        }
        Command::Device(DeviceCommand::Show { device, output: o }) => {
            let api = api::Api::acting(&g).await?;
            let id = api.resolve(&device).await?;
            let d = api.get(&format!("/api/devices/{id}")).await?;
            output::print_one(&d, o.format, DEVICE_FIELDS);
            Ok(())
        }
        Command::PairCode(o) => {
            let api = api::Api::acting(&g).await?;
            let code = api
                .post("/api/pairing/codes", &serde_json::json!({}))
                .await?;
            output::print_one(&code, o.format, &["code", "expires_at"]);
            Ok(())
        }
        Command::Rotate { device, output: o } => {
            let api = api::Api::acting(&g).await?;
            let id = api.resolve(&device).await?;
            let done = api
                .post(
                    &format!("/api/devices/{id}/credential"),
                    &serde_json::json!({}),
                )
                .await?;
            output::print_one(&done, o.format, &["device_id", "credential"]);
            Ok(())
        }
        Command::Forward {
            device,
            spec,
            local,
        } => {
            let spec = spec.or(local).unwrap_or_default();
            let spec: forward::Spec = spec.parse()?;
            let api = api::Api::acting(&g).await?;
            let id = api.resolve(&device).await?;
            forward::forward(api, id, spec).await
        }
        Command::Ssh { device, port, host } => {
            let api = api::Api::acting(&g).await?;
            let id = api.resolve(&device).await?;
            let target = forward::target(&host, port)?;
            forward::stdio(&api, &id, &target).await
        }
    }
}
