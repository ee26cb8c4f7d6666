//! How a browser proves who it is: HMAC-SHA256 signed cookies (several
//! verification keys, one signing key) and server-side session ids of which
//! only the hash is stored, and the OpenID Connect relying party that logs
//! users in (the only way a user is authenticated).

pub mod cookie;
pub mod oidc;
pub mod pending;
pub mod session_id;

pub use cookie::{CookieError, CookieKey, CookieKeys};
pub use session_id::SessionId;
