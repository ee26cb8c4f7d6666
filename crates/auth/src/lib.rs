//! How a browser proves who it is: HMAC-SHA256 signed cookies (several
//! verification keys, one signing key) and server-side session ids of which
//! only the hash is stored, and the OpenID Connect relying party that logs
//! users in (the only way a user is authenticated), in the browser's code
//! flow or, from a terminal, the device authorization grant.

pub mod client_assertion;
pub mod cookie;
pub mod device_login;
pub mod jws;
pub mod logout_token;
pub mod oidc;
pub mod pending;
pub mod session_id;

pub use cookie::{CookieError, CookieKey, CookieKeys};
pub use session_id::SessionId;
