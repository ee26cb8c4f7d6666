//! What every handler shares: the store, the directory view, cookie keys,
//! the OIDC client and checked settings.

use crate::config::Settings;
use auth::oidc::OidcClient;
use auth::CookieKeys;
use directory::SessionView;
use std::sync::Arc;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Read-and-control view only: the api-server cannot register sessions.
    pub directory: Arc<dyn SessionView>,
    pub cookies: CookieKeys,
    /// The OpenID Connect relying party: the only way users authenticate.
    pub oidc: Arc<OidcClient>,
    pub settings: Arc<Settings>,
}
