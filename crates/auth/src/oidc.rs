//! OpenID Connect relying party for the backend-for-frontend: discovery
//! (exact issuer), authorization code flow with PKCE S256, state and nonce,
//! and ID-token verification (signature with an algorithm allow-list, `iss`,
//! `aud`, `exp` with a bounded clock skew, `nonce`). The JWKS is cached and
//! refetched, at most once per `jwks_refresh_interval`, when a token names a
//! key we do not know. A client secret is optional: without one this is a
//! public PKCE-only client (`client_id` in the token request body).

use crate::pending::PendingLogin;
use edge_core::Secret;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata,
    RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Largest response body accepted from the provider.
const MAX_PROVIDER_BODY: usize = 1 << 20;

/// The only signature algorithms accepted on ID tokens (never `none`).
pub const ALLOWED_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Provider metadata we read beyond the core: the RP-initiated logout endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LogoutMetadata {
    pub end_session_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why a login could not be completed. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the identity provider rejected the request: {0}")]
    Rejected(String),
    #[error("the ID token is not acceptable: {0}")]
    InvalidToken(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Relying-party settings.
#[derive(Clone)]
pub struct OidcSettings {
    /// Issuer URL, compared as an exact string with the discovered `issuer`.
    pub issuer: String,
    pub client_id: String,
    /// `None`: public client (PKCE only). `Some`: confidential client.
    pub client_secret: Option<Secret>,
    pub redirect_url: String,
    pub scopes: Vec<String>,
    pub clock_skew: Duration,
    pub jwks_refresh_interval: Duration,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Who logged in, as the provider vouches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// What `start_login` hands back: where to send the browser, and the values
/// to keep in the pending-login cookie.
#[derive(Debug)]
pub struct LoginStart {
    pub authorize_url: String,
    pub pending: PendingLogin,
}

/// The relying party. Metadata is discovered lazily and cached.
pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    metadata: RwLock<Option<Metadata>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl OidcClient {
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer URL: {e}")))?;
        RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        if settings.client_id.is_empty() {
            return Err(OidcError::Config("client id is empty".into()));
        }
        let http = reqwest::Client::builder()
            // Never follow redirects from the provider's endpoints (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Self {
            settings,
            http,
            metadata: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    fn http_fn(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send,
        >,
    > {
        let client = self.http.clone();
        move |req: openidconnect::HttpRequest| {
            let client = client.clone();
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let res = client
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| HttpError(e.without_url().to_string()))?;
                let mut out = http::Response::builder().status(res.status());
                for (k, v) in res.headers() {
                    out = out.header(k, v);
                }
                if res.content_length().unwrap_or(0) > MAX_PROVIDER_BODY as u64 {
                    return Err(HttpError("provider response too large".into()));
                }
                let body = res
                    .bytes()
                    .await
                    .map_err(|e| HttpError(e.without_url().to_string()))?;
                if body.len() > MAX_PROVIDER_BODY {
                    return Err(HttpError("provider response too large".into()));
                }
                out.body(body.to_vec())
                    .map_err(|e| HttpError(e.to_string()))
            })
        }
    }

    /// Discover (once) and return the provider metadata.
    async fn metadata(&self) -> Result<Metadata, OidcError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let http = self.http_fn();
        let m = Metadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery failed: {e}")))?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Try discovery now (for start-up logs); failures are retried on use.
    pub async fn warm_up(&self) -> Result<(), OidcError> {
        self.metadata().await.map(|_| ())
    }

    fn client(
        &self,
        m: Metadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_owned()));
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone());
        let client = CoreClient::from_provider_metadata(
            m,
            ClientId::new(self.settings.client_id.clone()),
            secret,
        );
        match redirect {
            Ok(r) => client.set_redirect_uri(r),
            Err(_) => client,
        }
    }

    /// Begin a login: the provider URL and the values to remember.
    pub async fn start_login(&self, return_to: String) -> Result<LoginStart, OidcError> {
        let m = self.metadata().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client(m);
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = req.url();
        Ok(LoginStart {
            authorize_url: url.to_string(),
            pending: PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                return_to,
            },
        })
    }

    /// Exchange the code and verify the ID token against the pending login.
    pub async fn finish_login(
        &self,
        code: &str,
        pending: &PendingLogin,
    ) -> Result<Identity, OidcError> {
        let m = self.metadata().await?;
        let http = self.http_fn();
        let token = self
            .client(m.clone())
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| OidcError::Rejected(token_error(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::InvalidToken("no ID token in the token response".into()))?
            .clone();
        let nonce = Nonce::new(pending.nonce.clone());
        match self.verify(m, &id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let m = self.refresh_jwks().await?;
                self.verify(m, &id_token, &nonce)
                    .map_err(|e| OidcError::InvalidToken(e.to_string()))
            }
            other => other.map_err(|e| OidcError::InvalidToken(e.to_string())),
        }
    }

    fn verify(
        &self,
        m: Metadata,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &Nonce,
    ) -> Result<Identity, ClaimsVerificationError> {
        let skew = chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default();
        let client = self.client(m);
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(ALLOWED_ALGS.iter().cloned())
            .require_issuer_match(true)
            .require_audience_match(true)
            // Accept tokens that expired at most `skew` ago.
            .set_time_fn(move || chrono::Utc::now() - skew);
        let claims = id_token.claims(&verifier, nonce)?;
        Ok(Identity {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
        })
    }

    /// Refetch the JWKS, at most once per refresh interval.
    async fn refresh_jwks(&self) -> Result<Metadata, OidcError> {
        {
            let mut last = self
                .last_jwks_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.settings.jwks_refresh_interval) {
                return Err(OidcError::InvalidToken(
                    "ID token signed by an unknown key (JWKS refreshed recently)".into(),
                ));
            }
            *last = Some(Instant::now());
        }
        let mut m = self.metadata().await?;
        let http = self.http_fn();
        let jwks = CoreJsonWebKeySet::fetch_async(m.jwks_uri(), &http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("JWKS fetch failed: {e}")))?;
        m = m.set_jwks(jwks);
        *self.metadata.write().await = Some(m.clone());
        tracing::info!("refetched the provider's JWKS for an unknown key id");
        Ok(m)
    }

    /// The provider's end-session endpoint, when it advertises one.
    pub async fn end_session_url(&self) -> Option<String> {
        let m = self.metadata().await.ok()?;
        let endpoint = m.additional_metadata().end_session_endpoint.clone()?;
        let mut url = url::Url::parse(&endpoint).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id);
        Some(url.to_string())
    }
}

fn token_error<RE: std::error::Error + 'static>(
    err: &openidconnect::RequestTokenError<
        RE,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match err {
        openidconnect::RequestTokenError::ServerResponse(r) => r.error().to_string(),
        openidconnect::RequestTokenError::Request(e) => format!("request failed: {e}"),
        openidconnect::RequestTokenError::Parse(e, _) => format!("unreadable response: {e}"),
        openidconnect::RequestTokenError::Other(e) => e.clone(),
    }
}
