//! The API contract: an OpenAPI 3.1 document generated (utoipa) from the
//! handlers' `#[utoipa::path]` annotations and the types they take and
//! return, gathered with the routes (`router.rs`) and served at
//! `GET /api/openapi.json`. Its frame is here: title, tags, the security
//! schemes (the session cookie, the `X-CSRF` header, the bearer session,
//! a service account's Basic credential) and the proxy's entries.

use crate::proxy;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Edge AI cloud API",
        description = "Sign in through the Member Center, pair boxes, see them and reach them. Requests that change state need `X-CSRF: 1` besides the session cookie; errors are `{\"error\": {\"code\", \"message\", \"request_id\"}}`."
    ),
    // Every other route's entry comes with its route (`router.rs`,
    // `routes!`); the proxy's are routed by hand (a wildcard path, any
    // method) and documented here.
    paths(proxy::forward_root, proxy::forward_path),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Login (OpenID Connect), the session, logout"),
        (name = "pairing", description = "Pairing codes and their exchange by a box"),
        (name = "devices", description = "The caller's devices"),
        (name = "telemetry", description = "What each box reports: its last scrape, time series, fleet queries; health rules; webhooks"),
        (name = "service-accounts", description = "Owners' clients for scripts and CI: the client_credentials token endpoint and the accounts' management"),
        (name = "proxy", description = "Requests forwarded to a box's local service"),
        (name = "system", description = "Health, readiness, this document"),
        (name = "console", description = "The web console's files"),
    )
)]
pub struct ApiDoc;

/// Name of the scheme that is the session cookie.
pub const SESSION_SCHEME: &str = "session";
/// Name of the scheme that is the `X-CSRF` header.
pub const CSRF_SCHEME: &str = "csrf";
/// Name of the scheme that is a bearer session (the `edge` CLI's, or a
/// service account's token).
pub const BEARER_SCHEME: &str = "bearer";
/// Name of the scheme that is a service account's HTTP Basic credential.
pub const CLIENT_BASIC_SCHEME: &str = "client_basic";

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            CSRF_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF",
                "Must be `1` on every request that changes state",
            ))),
        );
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .description(Some(
                        "A bearer session from the device login (`edge login`), or a service account's access token from `POST /api/oauth/token`; never from a browser",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            CLIENT_BASIC_SCHEME,
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Basic)
                    .description(Some(
                        "A service account's client id and secret (`client_secret_basic`), at the token endpoint only",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document for this deployment: the session cookie's scheme is added
/// here because its name depends on whether cookies are `Secure`.
pub fn document(cookie_secure: bool) -> utoipa::openapi::OpenApi {
    let mut doc = crate::router::document().clone();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            SESSION_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::session::cookie_name(cookie_secure),
                "The session cookie set by the login callback",
            ))),
        );
    doc
}

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    responses((status = 200, description = "this document (OpenAPI 3.1)", content_type = "application/json"))
)]
pub async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.settings.cookie_secure))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `{*path}` in the route table is `{path}` in the document.
    fn doc_path(route: &str) -> String {
        route.replace("{*", "{")
    }

    #[test]
    fn every_route_of_the_table_is_in_the_document_with_each_method() {
        let doc = serde_json::to_value(document(true)).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        let mut missing = Vec::new();
        for def in crate::router::route_table() {
            for method in &def.methods {
                let key = method.as_str().to_ascii_lowercase();
                let found = paths
                    .get(&doc_path(&def.path))
                    .is_some_and(|item| item.get(&key).is_some());
                if !found {
                    missing.push(format!("{} {}", method, def.path));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        // And nothing in the document that the table does not serve.
        let table: Vec<String> = crate::router::route_table()
            .iter()
            .map(|d| doc_path(&d.path))
            .collect();
        for path in paths.keys() {
            assert!(table.contains(path), "{path} is documented but not routed");
        }
    }

    #[test]
    fn both_security_schemes_are_declared() {
        let doc = serde_json::to_value(document(false)).unwrap();
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["session"]["name"], "edge_session");
        assert_eq!(schemes["csrf"]["name"], "X-CSRF");
        let me = &doc["paths"]["/api/auth/me"]["get"];
        assert_eq!(me["security"][0]["session"], serde_json::json!([]));
        assert!(me["responses"]["401"]["content"]["application/json"].is_object());
    }
}
