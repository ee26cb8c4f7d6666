//! OpenID Connect relying party for the backend-for-frontend: discovery
//! (exact issuer), authorization code flow with PKCE S256, state and nonce,
//! and ID-token verification (signature with an algorithm allow-list, `iss`,
//! `aud`, `exp` with a bounded clock skew, `nonce`). The JWKS is cached and
//! refetched, at most once per `jwks_refresh_interval`, when a token names a
//! key we do not know. A client secret is optional: without one this is a
//! public PKCE-only client (`client_id` in the token request body).
//! Claims the ID token lacks come from the UserInfo endpoint, whose `sub`
//! must equal the ID token's. The issuer must be `https` unless it is on
//! loopback. Logout tokens (OIDC Back-Channel Logout 1.0) are verified here
//! in [`crate::logout_token`], with this client's keys.

pub use crate::logout_token::{LogoutRequest, BACKCHANNEL_LOGOUT_EVENT, LOGOUT_TOKEN_MAX_AGE_SECS};
use crate::pending::PendingLogin;
use edge_core::Secret;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AdditionalProviderMetadata, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope, SignatureVerificationError,
    SubjectIdentifier, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Largest response body accepted from the provider.
pub(crate) const MAX_PROVIDER_BODY: usize = 1 << 20;

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

/// Provider metadata we read beyond the core: the RP-initiated logout
/// endpoint and the device authorization endpoint (RFC 8628).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LogoutMetadata {
    pub end_session_endpoint: Option<String>,
    pub device_authorization_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for LogoutMetadata {}

pub(crate) type Metadata = ProviderMetadata<
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
    /// `check` names the check that failed, a stable label (metrics).
    #[error("the ID token is not acceptable: {detail}")]
    InvalidToken { check: &'static str, detail: String },
    #[error("configuration: {0}")]
    Config(String),
}

impl OidcError {
    /// Why a login failed, as a short stable label (metrics): `nonce`,
    /// `issuer`, `audience`, `expiry`, `signature` and `invalid_token`
    /// name the ID token's check that failed (`logout_token` a logout
    /// token's).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "provider_unavailable",
            Self::Rejected(_) => "provider_error",
            Self::Config(_) => "config",
            Self::InvalidToken { check, .. } => check,
        }
    }
}

impl OidcError {
    pub(crate) fn invalid(check: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidToken {
            check,
            detail: detail.into(),
        }
    }
}

/// An ID-token (or UserInfo) check failure, labelled by the check.
fn claims_error(context: &str, e: &ClaimsVerificationError) -> OidcError {
    let check = match e {
        ClaimsVerificationError::Expired(_) => "expiry",
        ClaimsVerificationError::InvalidAudience(_) => "audience",
        ClaimsVerificationError::InvalidIssuer(_) => "issuer",
        ClaimsVerificationError::InvalidNonce(_) => "nonce",
        // An unsupported JOSE header (JWE, `crit`, `typ`) is about how the
        // token is signed, as a bad signature is.
        ClaimsVerificationError::SignatureVerification(_)
        | ClaimsVerificationError::Unsupported(_) => "signature",
        _ => "invalid_token",
    };
    OidcError::invalid(check, format!("{context}{check} check failed: {e}"))
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
    /// PEM file with a private CA to trust for the provider, besides the
    /// web PKI roots.
    pub ca_file: Option<std::path::PathBuf>,
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
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// The provider's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
}

/// Whether `issuer` may be used: `https`, or `http` on a loopback host.
pub fn issuer_allowed(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => edge_core::net::is_loopback_url(&url),
        _ => false,
    }
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
    pub(crate) http: reqwest::Client,
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
        if !issuer_allowed(&settings.issuer) {
            return Err(OidcError::Config(
                "the issuer must use https (plain http only on a loopback address)".into(),
            ));
        }
        RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        if settings.client_id.is_empty() {
            return Err(OidcError::Config("client id is empty".into()));
        }
        let tls = edge_tls::client_config(settings.ca_file.as_deref())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            // Never follow redirects from the provider's endpoints (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .tls_backend_preconfigured((*tls).clone())
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
                    .map_err(|e| HttpError(error_chain(&e.without_url())))?;
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
    pub(crate) async fn metadata(&self) -> Result<Metadata, OidcError> {
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
        let m = Metadata::discover_async(issuer, &http).await.map_err(|e| {
            OidcError::Unavailable(format!("discovery failed: {}", error_chain(&e)))
        })?;
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
        let nonce = Nonce::new(pending.nonce.clone());
        self.identity_of(m, &token, Some(&nonce)).await
    }

    /// The verified identity in a token response: its ID token checked
    /// (against `nonce` when the login sent one; the JWKS refetched once
    /// for an unknown key), the provider's `sid`, and UserInfo's claims.
    pub(crate) async fn identity_of(
        &self,
        m: Metadata,
        token: &openidconnect::core::CoreTokenResponse,
        nonce: Option<&Nonce>,
    ) -> Result<Identity, OidcError> {
        let id_token = token
            .id_token()
            .ok_or_else(|| {
                OidcError::invalid("invalid_token", "no ID token in the token response")
            })?
            .clone();
        let mut identity = match self.verify(m.clone(), &id_token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let m = self.refresh_jwks().await?;
                self.verify(m, &id_token, nonce)
                    .map_err(|e| claims_error("", &e))?
            }
            other => other.map_err(|e| claims_error("", &e))?,
        };
        identity.sid = unverified_claim(&id_token.to_string(), "sid");
        self.add_user_info(m, token.access_token(), &mut identity)
            .await?;
        Ok(identity)
    }

    /// Fill what the ID token lacks from the UserInfo endpoint (when the
    /// provider has one). Its `sub` must equal the ID token's; an answer
    /// for anyone else fails the login.
    pub(crate) async fn add_user_info(
        &self,
        m: Metadata,
        access_token: &AccessToken,
        identity: &mut Identity,
    ) -> Result<(), OidcError> {
        if m.userinfo_endpoint().is_none() {
            return Ok(());
        }
        let http = self.http_fn();
        let client = self.client(m);
        let request = client
            .user_info(
                access_token.clone(),
                Some(SubjectIdentifier::new(identity.subject.clone())),
            )
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let info: openidconnect::core::CoreUserInfoClaims =
            request.request_async(&http).await.map_err(|e| match e {
                openidconnect::UserInfoError::ClaimsVerification(e) => {
                    claims_error("UserInfo: ", &e)
                }
                other => OidcError::Unavailable(format!("UserInfo: {other}")),
            })?;
        let info_email = info.email().map(|e| e.as_str().to_owned());
        if identity.email.is_none() {
            identity.email = info_email;
            identity.email_verified = info.email_verified();
        } else if identity.email_verified.is_none() && identity.email == info_email {
            // Same address: UserInfo may say what the ID token did not.
            identity.email_verified = info.email_verified();
        }
        if identity.name.is_none() {
            identity.name = info
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned());
        }
        Ok(())
    }

    /// Verify `id_token`; `nonce` is the one the login sent (`None`: the
    /// grant sends none, as the device grant).
    fn verify(
        &self,
        m: Metadata,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: Option<&Nonce>,
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
        let claims = match nonce {
            Some(nonce) => id_token.claims(&verifier, nonce)?,
            None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(()))?,
        };
        let email = claims.email().map(|e| e.as_str().to_owned());
        Ok(Identity {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email_verified: email.as_ref().and(claims.email_verified()),
            email,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            sid: None,
        })
    }

    /// Refetch the JWKS, at most once per refresh interval.
    pub(crate) async fn refresh_jwks(&self) -> Result<Metadata, OidcError> {
        {
            let mut last = self
                .last_jwks_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.settings.jwks_refresh_interval) {
                return Err(OidcError::invalid(
                    "signature",
                    "ID token signed by an unknown key (JWKS refreshed recently)",
                ));
            }
            *last = Some(Instant::now());
        }
        let mut m = self.metadata().await?;
        let http = self.http_fn();
        let jwks = CoreJsonWebKeySet::fetch_async(m.jwks_uri(), &http)
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!("JWKS fetch failed: {}", error_chain(&e)))
            })?;
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

/// An error with every cause behind it ("error sending request: … :
/// invalid peer certificate: UnknownIssuer"), so a TLS failure says why.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Part `index` (0 header, 1 claims) of a compact JWS, decoded as JSON.
pub(crate) fn decode_part(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A string claim of a token whose signature was already verified.
fn unverified_claim(token: &str, name: &str) -> Option<String> {
    decode_part(token, 1)?
        .get(name)?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_must_be_https_except_on_loopback() {
        assert!(issuer_allowed("https://member.example.com"));
        assert!(issuer_allowed("http://127.0.0.1:3790"));
        assert!(issuer_allowed("http://localhost:3790"));
        assert!(issuer_allowed("http://[::1]:3790"));
        assert!(!issuer_allowed("http://member.example.com"));
        assert!(!issuer_allowed("http://10.0.0.1"));
        assert!(!issuer_allowed("ftp://x"));
    }
}
