//! The web console: static files compiled into the binary (`console/`) and
//! served at `/`, `/console/{file}` and `/favicon.ico`. Every response
//! carries a strict Content-Security-Policy (scripts, styles, images and API
//! calls from this origin only, nothing inline, no framing), so the page
//! cannot load anything from another site even by mistake.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

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
];

/// The policy sent with every console file.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn file(name: &str) -> Result<Response, ApiError> {
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
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Ok(res)
}

/// `GET /`: the console's single page.
pub async fn index() -> Result<Response, ApiError> {
    file("index.html")
}

/// `GET /favicon.ico`: the console's icon, also for box UIs opened
/// through the proxy route (browsers ask the origin for it).
pub async fn favicon() -> Result<Response, ApiError> {
    file("icon.svg")
}

/// `GET /console/{file}`: its script, style sheet and icon.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    if name == "index.html" {
        return Err(ApiError::NotFound);
    }
    file(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_unknown_names_are_404() {
        for (name, ty, _) in FILES {
            let res = file(name).unwrap_or_else(|_| panic!("{name} missing"));
            assert_eq!(res.headers()[header::CONTENT_TYPE], *ty);
            assert_eq!(
                res.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
        }
        assert!(file("../Cargo.toml").is_err());
        assert!(file("").is_err());
    }

    #[test]
    fn the_page_references_nothing_outside_this_origin() {
        for (name, _, body) in FILES {
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
