//! The relay's internal HTTP API (port 3801), shared by server and client:
//! paths and error codes (the channel's are in `mux`).
//! Every request carries `Authorization: Bearer <internal secret>`.

use edge_core::{DeviceId, UserId};

/// `GET` lists sessions; `?owner=<user id>` only that owner's.
pub const SESSIONS: &str = "/internal/v1/sessions";
/// Error code the relay answers when the device has no live session.
pub const CODE_OFFLINE: &str = "device_offline";

/// `GET` one session, `DELETE` closes it.
pub fn session_path(device: DeviceId) -> String {
    format!("{SESSIONS}/{device}")
}

/// `GET` the sessions of `owner`'s devices.
pub fn owned_sessions_path(owner: UserId) -> String {
    format!("{SESSIONS}?owner={owner}")
}
