//! Target 5: the proxy's header handling on an arbitrary request head
//! (request line and headers, parsed as hyper does with httparse): what
//! goes to the box (hop-by-hop and `Connection`-listed headers dropped, our
//! cookies stripped, upgrade detection) and what comes back to the
//! browser. Nothing may panic; no hop-by-hop header and none of our
//! cookies may pass; and the rules over raw fields (the proxy's lane)
//! pass exactly what the rules over header maps pass.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy_rules::{
    box_request_headers, box_response_headers, console_request_fields, console_response_fields,
    Door,
};

type Lines = Vec<(Vec<u8>, Vec<u8>)>;

/// The head's fields as a map and as they were sent.
fn head(data: &[u8]) -> Option<(HeaderMap, Lines)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(data).ok()?;
    let mut map = HeaderMap::new();
    let mut raw = Vec::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
        raw.push((h.name.as_bytes().to_vec(), h.value.to_vec()));
    }
    Some((map, raw))
}

/// Lines with lowercased names, sorted.
fn sorted(lines: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Lines {
    let mut lines: Lines = lines.map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    lines.sort();
    lines
}

fn map_lines(map: &HeaderMap) -> Lines {
    sorted(
        map.iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((headers, raw)) = head(data) else {
        return;
    };
    let fields = raw.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
    let (to_box, _) = box_request_headers(headers.clone(), false);
    let raw_to_box =
        sorted(console_request_fields(fields.clone()).map(|(n, v)| (n.to_vec(), v.to_vec())));
    assert_eq!(
        raw_to_box,
        map_lines(&to_box),
        "the lane's rules differ on the way in"
    );
    let console = Door::ConsoleApi {
        prefix: "/api/devices/d/proxy".into(),
    };
    let back = box_response_headers(headers.clone(), &console);
    let mut raw_back = Vec::new();
    console_response_fields(fields, &[], |n, v| raw_back.push((n.to_vec(), v.to_vec())));
    assert_eq!(
        sorted(raw_back.into_iter()),
        map_lines(&back),
        "the lane's rules differ on the way back"
    );

    let listed: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let (out, _upgrade) = box_request_headers(headers.clone(), true);
    for name in &listed {
        assert!(
            !out.contains_key(name.as_str()),
            "{name} is listed in Connection"
        );
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
