//! What every response of the api-server carries and which requests it
//! refuses before any handler runs (the router's host dispatch applies
//! them): the fetch-metadata rule against cross-site requests on the
//! console origin, the idle timeout on every request body,
//! `no-store` on API answers (they carry credentials, codes and personal
//! data), HSTS whenever cookies are Secure, and resource isolation for the
//! console.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use edge_core::fields::Fields;
use http::{header, HeaderName, HeaderValue, Method};
use tower::ServiceExt;

/// HSTS value sent when cookies are Secure (one year).
pub const HSTS: &str = "max-age=31536000";

/// Console paths a cross-site top-level navigation may open: the console's
/// pages, and both halves of the login (the provider sends the browser back
/// to the callback from its own site).
fn navigable_cross_site(path: &str) -> bool {
    path == "/"
        || path == "/favicon.ico"
        || path.starts_with("/console/")
        || path == "/api/auth/login"
        || path == "/api/auth/callback"
}

/// Fetch metadata's names, made once: a name given as a string is parsed
/// again at each lookup, and these are looked up on every request.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

/// The `Sec-Fetch-Site` a browser sent (`None` from programs).
pub fn fetch_site(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(SEC_FETCH_SITE).and_then(|v| v.to_str().ok())
}

/// Whether a browser marked the request a top-level navigation.
pub fn is_navigation(headers: &http::HeaderMap) -> bool {
    headers
        .get(SEC_FETCH_MODE)
        .is_some_and(|v| v.as_bytes() == b"navigate")
}

/// Whether a browser sent the request: every current browser sends fetch
/// metadata (`Sec-Fetch-*`) with every request; programs do not.
pub fn from_browser(headers: &impl Fields) -> bool {
    headers.has_any(&[SEC_FETCH_SITE, SEC_FETCH_MODE, SEC_FETCH_DEST])
}

/// The fetch-metadata rule on the console origin: a request a browser marks
/// `Sec-Fetch-Site: cross-site` is refused unless it is a GET/HEAD
/// top-level navigation to a page that may be linked to. Requests without
/// fetch metadata (programs, agents, the provider's back-channel) pass;
/// they carry no ambient browser credentials.
pub fn cross_site_refused(method: &Method, path: &str, headers: &http::HeaderMap) -> bool {
    if fetch_site(headers) != Some("cross-site") {
        return false;
    }
    !(is_navigation(headers)
        && matches!(*method, Method::GET | Method::HEAD)
        && navigable_cross_site(path))
}

/// `req` with its body bounded by the idle timeout. A body that has
/// already ended is left as it is: there is nothing to wait for, and it
/// must still say it has ended (`TimeoutBody` does not pass that on), so
/// that the proxy sends a bodiless request the bodiless way.
pub(crate) fn with_idle_body(req: Request, idle: std::time::Duration) -> Request {
    if hyper::body::Body::is_end_stream(req.body()) {
        return req;
    }
    req.map(|body| Body::new(tower_http::timeout::TimeoutBody::new(idle, body)))
}

/// A console-origin request: refused when cross-site, else answered by
/// `console`; the answer gets the console's headers.
pub(crate) async fn console_request(console: Router, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let mut res = if cross_site_refused(req.method(), &path, req.headers()) {
        ApiError::CrossSite.into_response()
    } else {
        match console.oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    };
    console_headers(&mut res, &path);
    res
}

/// HSTS on every answer when cookies are Secure.
pub(crate) fn strict_transport(res: &mut Response, secure: bool) {
    if secure {
        res.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

/// Headers on the console origin: API answers are `no-store` (unless the
/// box's own answer through the proxy route says otherwise) and not
/// readable by other sites' pages.
pub(crate) fn console_headers(res: &mut Response, path: &str) {
    let proxied = path.starts_with("/api/devices/") && path.contains("/proxy");
    if path.starts_with("/api/") && !proxied {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    proxied_console_headers(res);
}

/// `Cross-Origin-Resource-Policy` on the console origin's answers.
pub(crate) const CONSOLE_CORP: &str = "same-origin";

const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// [`console_headers`] of an answer through the proxy route, whose
/// caching is the box's to say.
pub(crate) fn proxied_console_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.insert(
        CROSS_ORIGIN_RESOURCE_POLICY,
        HeaderValue::from_static(CONSOLE_CORP),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(site: &'static str, mode: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static(site));
        h.insert("sec-fetch-mode", HeaderValue::from_static(mode));
        h
    }

    #[test]
    fn cross_site_requests_are_refused_except_navigations_to_pages() {
        let nav = headers("cross-site", "navigate");
        assert!(!cross_site_refused(&Method::GET, "/", &nav));
        assert!(!cross_site_refused(
            &Method::GET,
            "/api/auth/callback",
            &nav
        ));
        assert!(cross_site_refused(&Method::GET, "/api/devices", &nav));
        assert!(cross_site_refused(
            &Method::POST,
            "/api/auth/callback",
            &nav
        ));
        let cors = headers("cross-site", "cors");
        assert!(cross_site_refused(&Method::GET, "/api/devices", &cors));
        assert!(cross_site_refused(&Method::GET, "/", &cors));
        assert!(!cross_site_refused(
            &Method::POST,
            "/api/pairing/codes",
            &headers("same-origin", "cors")
        ));
        assert!(!cross_site_refused(
            &Method::POST,
            "/api/pairing/exchange",
            &http::HeaderMap::new()
        ));
    }
}
