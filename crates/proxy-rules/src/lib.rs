//! What crosses the proxy between a caller and a box, as pure functions of
//! header maps (and, for the console door, of fields as they were sent,
//! which the proxy's lane writes from without a map; tests hold the two
//! equal): hop-by-hop headers and those `Connection` lists are
//! dropped both ways, the caller's credentials and our cookies never reach
//! the box, and box headers that could act beyond the device's origin (or
//! outlive the user's access) never reach the caller. The api-server's
//! proxy applies them; the `proxy_headers` fuzz target drives them alone.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Caller credentials and headers the proxy sets itself. `cookie` is
/// rebuilt (without ours) on device origins and dropped on the console.
const NOT_FORWARDED: &[&str] = &[
    "cookie",
    "authorization",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-csrf",
];

/// Box response headers that act beyond the device's origin or outlive the
/// user's access: wiping or planting site-wide state, widening a service
/// worker's scope, pinning transport policy for the host, moving the origin
/// to another server, persistent reporting, login status, and credentialed
/// CORS (which would let another device's origin read this one).
pub const BOX_HEADERS_DROPPED: &[&str] = &[
    "clear-site-data",
    "service-worker-allowed",
    "strict-transport-security",
    "alt-svc",
    "nel",
    "report-to",
    "set-login",
    "access-control-allow-credentials",
];

/// What a box's answer gets when it sets none: no type sniffing, no shared
/// caches.
const NOSNIFF: &str = "nosniff";
const PRIVATE: &str = "private";
/// What every answer through the console door gets, whatever the box said:
/// rendered by mistake, it would run on the console's origin, so it is an
/// opaque, script-less document and a download.
const CONSOLE_CSP: &str = "sandbox; default-src 'none'";
const CONSOLE_DISPOSITION: &str = "attachment";

/// Which door a request came through.
#[derive(Debug, Clone)]
pub enum Door {
    /// `/api/devices/{id}/proxy/...` on the console origin.
    ConsoleApi { prefix: String },
    /// The device's own origin; `host` is what the browser asked for.
    DeviceOrigin { host: Option<HeaderValue> },
}

/// The `Upgrade` value when the request asks for a protocol upgrade.
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Keep end-to-end headers: drop hop-by-hop ones and those named in
/// `Connection`, plus anything in `extra`. In place (no header is copied),
/// so the order of the names left may change; the order of one name's
/// values does not.
fn end_to_end(headers: HeaderMap, extra: &[&str]) -> HeaderMap {
    let listed = connection_listed(&headers);
    end_to_end_without(headers, extra, &listed)
}

/// [`end_to_end`], with the names `Connection` lists already read.
fn end_to_end_without(mut headers: HeaderMap, extra: &[&str], listed: &[HeaderName]) -> HeaderMap {
    // The names present are looked over once (a request has few), rather
    // than each name that may not pass looked up. The first few to drop
    // are noted on the stack: most messages have one or two.
    let mut few: [Option<HeaderName>; 4] = Default::default();
    let mut more = Vec::new();
    let dropped = headers.keys().filter(|name| {
        let n = name.as_str();
        HOP_BY_HOP.contains(&n) || extra.contains(&n) || listed.contains(name)
    });
    for (i, name) in dropped.enumerate() {
        match few.get_mut(i) {
            Some(slot) => *slot = Some(name.clone()),
            None => more.push(name.clone()),
        }
    }
    for name in few.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
    headers
}

/// The header names `Connection` lists (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Cookie names that are ours (or could pass for ours): the platform's
/// `edge_` names, with or without a `__Host-`/`__Secure-` prefix, and any
/// prefixed name at all. Compared without regard to case.
fn is_our_cookie_name(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n.starts_with("edge_") || n.starts_with("__host-") || n.starts_with("__secure-")
}

/// The request's cookies without ours: what a box on its own origin may see.
fn box_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .filter(|kv| !is_our_cookie_name(kv.split('=').next().unwrap_or(kv)))
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten()
}

/// Whether a box's `Set-Cookie` may reach the browser on its own origin:
/// never one of our names or a prefixed name, never one with a `Domain`
/// (which would reach beyond this device's host).
fn box_cookie_allowed(set_cookie: &HeaderValue) -> bool {
    let Ok(v) = set_cookie.to_str() else {
        return false;
    };
    let mut parts = v.split(';');
    let Some((name, _)) = parts.next().and_then(|kv| kv.split_once('=')) else {
        return false;
    };
    !is_our_cookie_name(name)
        && !parts.any(|attr| {
            attr.split('=')
                .next()
                .is_some_and(|a| a.trim().eq_ignore_ascii_case("domain"))
        })
}

/// Keep only the box's `Set-Cookie`s that may reach the browser through
/// `door`: none on the console API, the allowed ones on a device origin.
fn filter_box_cookies(out: &mut HeaderMap, door: &Door) {
    let cookies: Vec<HeaderValue> = out.get_all(header::SET_COOKIE).iter().cloned().collect();
    out.remove(header::SET_COOKIE);
    if matches!(door, Door::DeviceOrigin { .. }) {
        for c in cookies.into_iter().filter(box_cookie_allowed) {
            out.append(header::SET_COOKIE, c);
        }
    }
}

/// The headers of the box's `101 Switching Protocols` as the browser may
/// see them: the upgrade's own (`Upgrade`, `Connection`, `Sec-WebSocket-*`)
/// kept, the dropped ones gone, cookies filtered as on any answer.
pub fn box_upgrade_headers(src: &HeaderMap, door: &Door) -> HeaderMap {
    let mut out = src.clone();
    for name in BOX_HEADERS_DROPPED {
        out.remove(*name);
    }
    filter_box_cookies(&mut out, door);
    out
}

/// The box's response headers as the browser may see them.
pub fn box_response_headers(src: HeaderMap, door: &Door) -> HeaderMap {
    let mut out = end_to_end(src, BOX_HEADERS_DROPPED);
    filter_box_cookies(&mut out, door);
    if !out.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static(NOSNIFF),
        );
    }
    if !out.contains_key(header::CACHE_CONTROL) {
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE));
    }
    if matches!(door, Door::ConsoleApi { .. }) {
        // Rendered by mistake, it would run on the console's origin: make
        // it an opaque, script-less document and a download.
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_CSP),
        );
        out.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static(CONSOLE_DISPOSITION),
        );
    }
    out
}

/// The caller's headers as a box may see them, before the proxy adds its
/// own: end-to-end ones only (no hop-by-hop, nothing `Connection` lists,
/// no caller credentials), and on a device origin the caller's cookies
/// without ours; with the upgrade the caller asked for, if any.
pub fn box_request_headers(
    src: HeaderMap,
    device_origin: bool,
) -> (HeaderMap, Option<HeaderValue>) {
    let upgrade = requested_upgrade(&src);
    let listed = connection_listed(&src);
    // A `Cookie` that `Connection` lists is this hop's alone.
    let cookies = if device_origin && !listed.contains(&header::COOKIE) {
        box_cookies(&src)
    } else {
        None
    };
    let mut headers = end_to_end_without(src, NOT_FORWARDED, &listed);
    if let Some(cookies) = cookies {
        headers.insert(header::COOKIE, cookies);
    }
    (headers, upgrade)
}

/// A field as it was sent: name (any case) and value.
pub type Field<'a> = (&'a [u8], &'a [u8]);

/// The tokens the `Connection` fields among `fields` list, trimmed; as
/// [`connection_listed`] reads them (values that are not visible ASCII
/// list nothing).
fn raw_connection_listed<'a>(fields: impl Iterator<Item = Field<'a>>) -> Vec<&'a [u8]> {
    let mut listed = Vec::new();
    for (name, value) in fields {
        if !name.eq_ignore_ascii_case(b"connection")
            || !value
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            continue;
        }
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() {
                listed.push(token);
            }
        }
    }
    listed
}

/// Field names looked up by their length first: a name is compared only
/// with those of its own length (one or two), not with a whole list.
struct NameSet {
    by_len: Vec<Vec<&'static str>>,
}

impl NameSet {
    fn of(lists: &[&[&'static str]]) -> Self {
        let mut by_len: Vec<Vec<&'static str>> = Vec::new();
        for &name in lists.iter().flat_map(|list| list.iter()) {
            if by_len.len() <= name.len() {
                by_len.resize_with(name.len() + 1, Vec::new);
            }
            by_len[name.len()].push(name);
        }
        Self { by_len }
    }

    /// Whether `name` is in the set, without regard to case.
    fn has(&self, name: &[u8]) -> bool {
        self.by_len
            .get(name.len())
            .is_some_and(|same| same.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes())))
    }
}

/// What the console door never passes to the box, whatever `Connection`
/// lists: hop-by-hop fields and [`NOT_FORWARDED`].
static CONSOLE_REQUEST_DROPPED: std::sync::LazyLock<NameSet> =
    std::sync::LazyLock::new(|| NameSet::of(&[HOP_BY_HOP, NOT_FORWARDED]));

/// What the console door never passes from the box to the caller, or sets
/// itself: hop-by-hop fields, [`BOX_HEADERS_DROPPED`], [`CONSOLE_SET`] and
/// `Set-Cookie`.
static CONSOLE_RESPONSE_DROPPED: std::sync::LazyLock<NameSet> = std::sync::LazyLock::new(|| {
    NameSet::of(&[
        HOP_BY_HOP,
        BOX_HEADERS_DROPPED,
        CONSOLE_SET,
        &["set-cookie"],
    ])
});

/// Whether `name` is one of `listed`, without regard to case.
fn listed_in(name: &[u8], listed: &[&[u8]]) -> bool {
    listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// [`box_request_headers`] for the console door over a head's fields as
/// they were sent, without a map: the fields that reach the box, in the
/// order they came (the proxy then adds its own).
pub fn console_request_fields<'a, I>(fields: I) -> impl Iterator<Item = Field<'a>>
where
    I: Iterator<Item = Field<'a>> + Clone,
{
    let listed = raw_connection_listed(fields.clone());
    let dropped = &*CONSOLE_REQUEST_DROPPED;
    fields.filter(move |(name, _)| !dropped.has(name) && !listed_in(name, &listed))
}

/// Box response fields the console door sets itself, whatever the box
/// said ([`box_response_headers`] inserts them).
const CONSOLE_SET: &[&str] = &["content-security-policy", "content-disposition"];

/// [`box_response_headers`] for the console door over the box's answer
/// fields as they were sent, without a map: `put` is called with each
/// field that reaches the caller, in order, then with the ones the door
/// adds. Fields whose names are in `own` are left out: the caller writes
/// those itself.
pub fn console_response_fields<'a, I>(fields: I, own: &[&str], mut put: impl FnMut(&[u8], &[u8]))
where
    I: Iterator<Item = Field<'a>> + Clone,
{
    let listed = raw_connection_listed(fields.clone());
    let dropped = &*CONSOLE_RESPONSE_DROPPED;
    let (mut nosniff, mut cache_control) = (false, false);
    for (name, value) in fields {
        if dropped.has(name) || listed_in(name, &listed) {
            continue;
        }
        nosniff |= name.eq_ignore_ascii_case(b"x-content-type-options");
        cache_control |= name.eq_ignore_ascii_case(b"cache-control");
        if !own.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes())) {
            put(name, value);
        }
    }
    if !nosniff {
        put(b"x-content-type-options", NOSNIFF.as_bytes());
    }
    if !cache_control {
        put(b"cache-control", PRIVATE.as_bytes());
    }
    put(b"content-security-policy", CONSOLE_CSP.as_bytes());
    put(b"content-disposition", CONSOLE_DISPOSITION.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let out = end_to_end(h, NOT_FORWARDED);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key(header::ACCEPT));
    }

    #[test]
    fn listed_names_are_matched_without_case_and_kept_values_keep_their_order() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-Hop , ,"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        for v in ["a", "b", "c"] {
            h.append(header::VARY, HeaderValue::from_static(v));
        }
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ETAG, HeaderValue::from_static("\"e\""));
        let out = end_to_end(h, &[]);
        assert_eq!(out.len(), 4);
        let vary: Vec<_> = out.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["a", "b", "c"]);
        assert_eq!(out[header::ETAG], "\"e\"");
    }

    #[test]
    fn more_dropped_names_than_noted_on_the_stack_all_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-a, x-b, x-c, x-d, x-e"),
        );
        for name in ["x-a", "x-b", "x-c", "x-d", "x-e", "te", "trailer"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let out = end_to_end(h, &[]);
        let left: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested_upgrade(&h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            requested_upgrade(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    fn device_door() -> Door {
        Door::DeviceOrigin { host: None }
    }

    #[test]
    fn box_cookies_that_could_shadow_ours_or_reach_beyond_the_host_are_dropped() {
        let mut h = HeaderMap::new();
        for c in [
            "theme=dark; Path=/",
            "__Host-edge_session=evil; Path=/; Secure",
            "edge_session=evil; Path=/",
            "EDGE_DEVICE=evil",
            "__Secure-x=1; Secure",
            "wide=1; Path=/; domain=localhost",
            "wide2=1; Domain =.example.net",
            "box_session=abc; HttpOnly; SameSite=Lax",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        let out = box_response_headers(h.clone(), &device_door());
        let kept: Vec<_> = out
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_owned())
            .collect();
        assert_eq!(kept, ["theme", "box_session"]);
        let console = box_response_headers(
            h,
            &Door::ConsoleApi {
                prefix: "/p".into(),
            },
        );
        assert!(!console.contains_key(header::SET_COOKIE));
    }

    #[test]
    fn site_wide_headers_are_dropped_and_safe_defaults_added() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("clear-site-data", "\"*\""),
            ("service-worker-allowed", "/"),
            ("strict-transport-security", "max-age=1"),
            ("alt-svc", "h2=\":443\""),
            ("nel", "{}"),
            ("report-to", "{}"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "text/html"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = box_response_headers(h, &device_door());
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["cache-control", "content-type", "x-content-type-options"]
        );
        assert_eq!(out[header::CACHE_CONTROL], "private");
        // The box's own choices are kept.
        let mut own = HeaderMap::new();
        own.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            box_response_headers(own.clone(), &device_door())[header::CACHE_CONTROL],
            "no-store"
        );
        let console = box_response_headers(
            own,
            &Door::ConsoleApi {
                prefix: "/p".into(),
            },
        );
        assert_eq!(
            console[header::CONTENT_SECURITY_POLICY],
            "sandbox; default-src 'none'"
        );
        assert_eq!(console[header::CONTENT_DISPOSITION], "attachment");
    }

    #[test]
    fn a_cookie_that_connection_lists_is_not_rebuilt_for_the_box() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
        assert_eq!(
            box_request_headers(h.clone(), true).0[header::COOKIE],
            "theme=dark"
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("Cookie"));
        assert!(!box_request_headers(h, true).0.contains_key(header::COOKIE));
    }

    #[test]
    fn the_box_sees_its_own_cookies_but_never_ours() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; edge_device=sig; __Host-edge_device=x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("box=1"));
        assert_eq!(box_cookies(&h).unwrap(), "theme=dark; box=1");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("edge_device=sig"));
        assert!(box_cookies(&only_ours).is_none());
    }

    /// Header lists drawn from names the rules treat specially, in mixed
    /// case, with `Connection` lists that name some of them.
    fn drawn_fields(seed: u64) -> Vec<(String, String)> {
        const NAMES: &[&str] = &[
            "Connection",
            "keep-alive",
            "TE",
            "Upgrade",
            "transfer-encoding",
            "Cookie",
            "authorization",
            "Host",
            "x-forwarded-for",
            "X-CSRF",
            "accept",
            "X-Box",
            "set-cookie",
            "Cache-Control",
            "x-content-type-options",
            "content-security-policy",
            "Content-Disposition",
            "strict-transport-security",
            "alt-svc",
            "content-type",
            "x-request-id",
            "date",
            "content-length",
        ];
        const VALUES: &[&str] = &[
            "1",
            "x-box, accept",
            "close",
            "a=b; edge_s=1",
            "Keep-Alive",
            "text/plain",
        ];
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        // Every name of every list the rules hold, as well, in either case.
        let listed: Vec<&str> =
            [HOP_BY_HOP, NOT_FORWARDED, BOX_HEADERS_DROPPED, CONSOLE_SET].concat();
        (0..next(9))
            .map(|_| {
                let name = if next(2) == 0 {
                    NAMES[next(NAMES.len())].to_owned()
                } else if next(2) == 0 {
                    listed[next(listed.len())].to_owned()
                } else {
                    listed[next(listed.len())].to_ascii_uppercase()
                };
                (name, VALUES[next(VALUES.len())].to_owned())
            })
            .collect()
    }

    #[test]
    fn a_name_set_holds_its_names_in_any_case_and_nothing_else() {
        let set = NameSet::of(&[HOP_BY_HOP, &["set-cookie"]]);
        for name in HOP_BY_HOP.iter().chain(&["set-cookie"]) {
            assert!(set.has(name.as_bytes()), "{name}");
            assert!(set.has(name.to_ascii_uppercase().as_bytes()), "{name}");
            // Same length, one byte changed; one byte more; one less.
            let mut near = name.as_bytes().to_vec();
            near[0] ^= 0x01;
            assert!(!set.has(&near), "{name}");
            assert!(!set.has(format!("{name}s").as_bytes()), "{name}");
            assert!(!set.has(&name.as_bytes()[1..]), "{name}");
        }
        for other in [
            "",
            "x",
            "cookie",
            "accept",
            "a-name-longer-than-any-in-the-set",
        ] {
            assert!(!set.has(other.as_bytes()), "{other}");
        }
    }

    fn sorted(mut lines: Vec<(String, String)>) -> Vec<(String, String)> {
        lines.sort();
        lines
    }

    fn map_of(fields: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn lines_of(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn the_raw_rules_pass_what_the_map_rules_pass() {
        let door = Door::ConsoleApi {
            prefix: "/api/devices/d/proxy".into(),
        };
        for seed in 0..2000 {
            let fields = drawn_fields(seed);
            let raw = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));

            let (to_box, _) = box_request_headers(map_of(&fields), false);
            let raw_to_box: Vec<(String, String)> = console_request_fields(raw.clone())
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            assert_eq!(sorted(raw_to_box), sorted(lines_of(&to_box)), "{fields:?}");

            let back = box_response_headers(map_of(&fields), &door);
            let mut raw_back = Vec::new();
            console_response_fields(raw, &[], |n, v| {
                raw_back.push((
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            });
            assert_eq!(sorted(raw_back), sorted(lines_of(&back)), "{fields:?}");
        }
    }

    #[test]
    fn fields_the_caller_writes_itself_are_left_out() {
        let fields = [(&b"X-Request-Id"[..], &b"1"[..]), (b"x-box", b"2")];
        let mut names = Vec::new();
        console_response_fields(fields.into_iter(), &["x-request-id"], |n, _| {
            names.push(String::from_utf8_lossy(n).into_owned());
        });
        assert_eq!(
            names,
            [
                "x-box",
                "x-content-type-options",
                "cache-control",
                "content-security-policy",
                "content-disposition"
            ]
        );
    }
}
