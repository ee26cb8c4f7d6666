//! Target 5: the proxy's header handling on an arbitrary request head
//! (request line and headers, parsed as hyper does with httparse): what
//! goes to the box (hop-by-hop and `Connection`-listed headers dropped, our
//! cookies stripped, upgrade detection) and what comes back to the
//! browser. Nothing may panic; no hop-by-hop header and none of our
//! cookies may pass.
#![no_main]

use proxy_rules::{box_request_headers, box_response_headers, Door};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn head(data: &[u8]) -> Option<HeaderMap> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(data).ok()?;
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}

fuzz_target!(|data: &[u8]| {
    let Some(headers) = head(data) else {
        return;
    };
    let listed: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let (out, _upgrade) = box_request_headers(headers.clone(), true);
    for name in &listed {
        assert!(!out.contains_key(name.as_str()), "{name} is listed in Connection");
    }
    for hop in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "proxy-authorization",
    ] {
        assert!(!out.contains_key(hop), "{hop} forwarded to the box");
    }
    for cookie in out.get_all(http::header::COOKIE) {
        let text = cookie.to_str().unwrap_or("");
        for pair in text.split(';') {
            let name = pair
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            assert!(!name.starts_with("edge_"), "our cookie {name} forwarded");
        }
    }
    let door = Door::DeviceOrigin { host: None };
    let back = box_response_headers(headers, &door);
    assert!(!back.contains_key("connection"));
});
