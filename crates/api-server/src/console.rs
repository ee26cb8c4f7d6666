//! The web console: static files compiled into the binary (`console/`) and
//! served at `/`, `/console/{file}` and `/favicon.ico`. Every response
//! carries a strict Content-Security-Policy (scripts, styles, images and API
//! calls from this origin only, nothing inline, no framing, forms posted
//! only here and to device origins), so the page cannot load anything from
//! another site even by mistake, and `Cross-Origin-Opener-Policy:
//! same-origin`, so a device's page opened from it never holds a reference
//! to the console's window.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use edge_core::error_body::ErrorBody;

/// `(name, content type, body)` of every console file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../console/icon.svg"),
    ),
    // uPlot 1.6.32, MIT (console/vendor/README, uplot-LICENSE).
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/vendor/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_str!("../console/vendor/uplot.min.css"),
    ),
    (
        "uplot-LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../console/vendor/uplot-LICENSE"),
    ),
];

/// The policy sent with every console file; forms may also go to
/// `device_origins` (a CSP source such as `https://*.devices.example.net`),
/// which is how "Open device UI" carries its ticket.
pub fn content_security_policy(device_origins: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'self' {device_origins}; \
         frame-ancestors 'none'"
    )
}

fn file(name: &str, csp: &str) -> Result<Response, ApiError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ApiError::NotFound)?;
    let mut res = (*body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(csp).map_err(|_| ApiError::Internal)?,
    );
    h.insert(
        http::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Cross-origin requests carry the console's origin only (never a
    // path); `same-origin` would send `Origin: null` with the form that
    // enters a device origin, which then could not tell it from a forgery.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    Ok(res)
}

fn csp_of(state: &AppState) -> String {
    content_security_policy(&state.settings.device_origins.csp_source())
}

/// `GET /`: the console's single page.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses(
        (status = 200, description = "the console page", content_type = "text/html"),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    file("index.html", &csp_of(&state))
}

/// `GET /favicon.ico`: the console's icon.
#[utoipa::path(
    get,
    path = "/favicon.ico",
    tag = "console",
    responses(
        (status = 200, description = "the icon", content_type = "image/svg+xml"),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn favicon(State(state): State<AppState>) -> Result<Response, ApiError> {
    file("icon.svg", &csp_of(&state))
}

/// `GET /console/{file}`: its script, style sheet and icon.
#[utoipa::path(
    get,
    path = "/console/{file}",
    tag = "console",
    params(("file" = String, Path, description = "file name")),
    responses(
        (status = 200, description = "a console file (script, style sheet)"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if name == "index.html" {
        return Err(ApiError::NotFound);
    }
    file(&name, &csp_of(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_unknown_names_are_404() {
        let csp = content_security_policy("https://*.devices.example.net");
        assert!(csp.contains("form-action 'self' https://*.devices.example.net;"));
        for (name, ty, _) in FILES {
            let res = file(name, &csp).unwrap_or_else(|_| panic!("{name} missing"));
            assert_eq!(res.headers()[header::CONTENT_TYPE], *ty);
            assert_eq!(res.headers()[header::CONTENT_SECURITY_POLICY], csp.as_str());
            assert_eq!(res.headers()["cross-origin-opener-policy"], "same-origin");
        }
        assert!(file("../Cargo.toml", &csp).is_err());
        assert!(file("", &csp).is_err());
    }

    #[test]
    fn the_page_references_nothing_outside_this_origin() {
        for (name, _, body) in FILES {
            // A vendored file's licence banner (`/*! https://… */`) names
            // where it came from; it is a comment, not a request.
            let body = match body.strip_prefix("/*!") {
                Some(rest) => rest.split_once("*/").map_or(*body, |(_, code)| code),
                None => body,
            };
            if *name == "uplot-LICENSE" {
                continue;
            }
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                // An SVG names its XML namespace with an http:// URI; that is not a request.
                if *name == "icon.svg" && needle == "http://" {
                    continue;
                }
                assert!(!body.contains(needle), "{name} contains {needle}");
            }
        }
    }
}
