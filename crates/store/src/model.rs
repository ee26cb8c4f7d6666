//! Row types the store hands out.

use edge_core::{DeviceId, UserId};
use serde::Serialize;

/// A Member Center user known to the platform, keyed by (issuer, subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// The provider's `email_verified` claim (`None`: not said).
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub created_at: i64,
}

/// What a login tells the store about the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserClaims {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
}

/// Which door a session opens: the console's cookie, or a bearer token
/// (the `edge` CLI, ADR 028). A session is presented only the way it was
/// made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Browser,
    Bearer,
    /// A service account's access token (client_credentials).
    Service,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Bearer => "bearer",
            Self::Service => "service",
        }
    }
}

/// A server-side user session (only the hash of its id is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub public_id: String,
    pub user_id: UserId,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub kind: SessionKind,
    /// What the client called itself (bearer sessions: `edge CLI on HOST`).
    pub label: Option<String>,
    /// A service account's token: what it was issued with.
    pub service: Option<ServiceGrant>,
}

/// What a service account's access token carries: the account, the
/// scopes it was granted and the label selector bounding its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceGrant {
    pub account: String,
    pub scopes: edge_core::scope::Scopes,
    /// Labels a device must all carry to be seen (empty: every device).
    pub selector: Vec<String>,
}

impl ServiceGrant {
    /// Whether a device with `labels` is inside the selector.
    pub fn admits(&self, labels: &[String]) -> bool {
        self.selector.iter().all(|want| labels.contains(want))
    }
}

/// A paired edge box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub owner_id: UserId,
    pub name: String,
    pub labels: Vec<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub agent_version: Option<String>,
    pub created_at: i64,
    /// When the relay last saw this device's tunnel open or close (ms).
    pub last_seen_at: Option<i64>,
    /// Its metrics path (`None`: the deployment's).
    pub metrics_path: Option<String>,
}

/// What a box says about itself when it is created.
#[derive(Debug, Clone, Default)]
pub struct NewDevice {
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub agent_version: Option<String>,
}

/// The result of checking a device credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuth {
    pub device_id: DeviceId,
    pub owner_id: UserId,
    /// Its metrics path (`None`: the deployment's).
    pub metrics_path: Option<String>,
}

/// A device-origin entry ticket that was just redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemedTicket {
    pub user_id: UserId,
    /// Hash of the user session the ticket was issued to.
    pub session_hash: String,
}

/// How a device list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSort {
    #[default]
    Created,
    CreatedDesc,
    Name,
    NameDesc,
}

/// A filtered, ordered page of an owner's devices.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Case-insensitive substring of the name, the serial or a label.
    pub search: Option<String>,
    /// Only devices in this health state (`unknown` includes unjudged ones).
    pub health: Option<String>,
    /// `(true, ids)`: only these devices; `(false, ids)`: all but these.
    pub among: Option<(bool, Vec<DeviceId>)>,
    /// Only devices carrying every one of these labels (exactly).
    pub labels: Vec<String>,
    pub sort: DeviceSort,
    pub limit: i64,
    pub offset: i64,
}
