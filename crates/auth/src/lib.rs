//! How a browser proves who it is: HMAC-SHA256 signed cookies (several
//! verification keys, one signing key) and server-side session ids of which
//! only the hash is stored.

pub mod cookie;
pub mod session_id;

pub use cookie::{CookieError, CookieKey, CookieKeys};
pub use session_id::SessionId;
