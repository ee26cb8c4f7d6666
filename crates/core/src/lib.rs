//! Shared vocabulary of the platform: domain ids, pairing codes, secret
//! wrappers, the JSON error body, telemetry set-up, shutdown signalling and
//! the HTTP serve loop and its listeners.

pub mod client_addr;
pub mod error_body;
pub mod fields;
pub mod ids;
pub mod io;
pub mod listen;
pub mod metrics;
pub mod net;
pub mod pairing_code;
pub mod ratelimit;
pub mod request_id;
pub mod scope;
pub mod secret;
pub mod serve;
pub mod shard;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod time;

pub use ids::{DeviceId, UserId};
pub use secret::{DeviceToken, Secret};
