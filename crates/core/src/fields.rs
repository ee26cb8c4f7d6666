//! A message's header fields looked up by name, in either form a server
//! holds them: `http::HeaderMap` (the router's) or a head kept as the
//! bytes it was read in with each field's place in it ([`RawFields`]: the
//! proxy's lane and a box's answer). A check written over [`Fields`] reads
//! both, so the lane does not build a map (hashing every name) only to
//! look up a few of them (ADR 037).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where a part of a head lies in its bytes: offset and length. A head is
/// at most tens of KiB, so `u32` holds both.
pub type Span = [u32; 2];

/// The span of `part`, a slice of `head`.
pub fn span_of(head: &[u8], part: &[u8]) -> Span {
    let at = part.as_ptr() as usize - head.as_ptr() as usize;
    [at as u32, part.len() as u32]
}

/// The span as a range of the head's bytes.
pub fn range([at, len]: Span) -> std::ops::Range<usize> {
    at as usize..(at + len) as usize
}

/// Header fields by name.
pub trait Fields {
    /// The values of the fields named `name`, in the order they came.
    type Values<'a>: Iterator<Item = &'a [u8]>
    where
        Self: 'a;

    /// The values of the fields named `name` (any case), in order.
    fn values_of<'a>(&'a self, name: &HeaderName) -> Self::Values<'a>;

    /// The first value of `name`.
    fn first<'a>(&'a self, name: &HeaderName) -> Option<&'a [u8]> {
        self.values_of(name).next()
    }

    /// Whether any field is named `name`.
    fn has(&self, name: &HeaderName) -> bool {
        self.values_of(name).next().is_some()
    }

    /// Whether any field is named one of `names`.
    fn has_any(&self, names: &[HeaderName]) -> bool {
        names.iter().any(|name| self.has(name))
    }

    /// The first value of `name` as text, read as `HeaderValue::to_str`
    /// reads it (visible ASCII and tabs only).
    fn text<'a>(&'a self, name: &HeaderName) -> Option<&'a str> {
        self.first(name).and_then(visible)
    }
}

/// `value` as text when it holds only visible ASCII and tabs, as
/// `HeaderValue::to_str` takes it.
pub fn visible(value: &[u8]) -> Option<&str> {
    // Every byte looked at, without an early exit, so the check runs over
    // many bytes at once (a session cookie is a few hundred).
    let ok = value.iter().fold(true, |ok, &b| {
        ok & ((b == b'\t') | (b.wrapping_sub(0x20) < 0x5f))
    });
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// Whether `value` may be a header value: what `HeaderValue::from_bytes`
/// accepts (no control character but tab, no DEL).
pub fn valid_value(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b == b'\t') | ((b >= 0x20) & (b != 0x7f)))
    })
}

type MapValues<'a> =
    std::iter::Map<http::header::ValueIter<'a, HeaderValue>, fn(&'a HeaderValue) -> &'a [u8]>;

impl Fields for HeaderMap {
    type Values<'a> = MapValues<'a>;

    fn values_of<'a>(&'a self, name: &HeaderName) -> MapValues<'a> {
        self.get_all(name)
            .iter()
            .map(HeaderValue::as_bytes as fn(&'a HeaderValue) -> &'a [u8])
    }
}

/// A head's fields as spans of its bytes: names as they were sent, values
/// shared with the head, not copied.
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    fields: Vec<[Span; 2]>,
}

impl RawFields {
    /// `fields` are `[name, value]` spans of `head`.
    pub fn new(head: Bytes, fields: Vec<[Span; 2]>) -> Self {
        Self { head, fields }
    }

    /// The head's bytes.
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// Every field as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.fields
            .iter()
            .map(|&[n, v]| (&self.head[range(n)], &self.head[range(v)]))
    }

    /// The fields as a map (names lowercased, values shared); `None` when a
    /// name or value is not one `http` takes.
    pub fn to_header_map(&self, room: usize) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.fields.len() + room);
        for &[name, value] in &self.fields {
            let name = HeaderName::from_bytes(&self.head[range(name)]).ok()?;
            let value = HeaderValue::from_maybe_shared(self.head.slice(range(value))).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

/// [`RawFields::values_of`]: the fields named alike, in order.
pub struct RawValues<'a> {
    fields: std::slice::Iter<'a, [Span; 2]>,
    head: &'a [u8],
    name: HeaderName,
}

impl<'a> Iterator for RawValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let wanted = self.name.as_str().as_bytes();
        self.fields.by_ref().find_map(|&[n, v]| {
            let name = &self.head[range(n)];
            name.eq_ignore_ascii_case(wanted)
                .then(|| &self.head[range(v)])
        })
    }
}

impl Fields for RawFields {
    type Values<'a> = RawValues<'a>;

    /// One look over the fields, not one per name.
    fn has_any(&self, names: &[HeaderName]) -> bool {
        self.iter().any(|(field, _)| {
            names
                .iter()
                .any(|name| field.eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
    }

    fn values_of<'a>(&'a self, name: &HeaderName) -> RawValues<'a> {
        RawValues {
            fields: self.fields.iter(),
            head: &self.head,
            name: name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(head: &'static [u8]) -> RawFields {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(_) = req.parse(head).unwrap() else {
            panic!("partial head");
        };
        let fields = req
            .headers
            .iter()
            .map(|h| [span_of(head, h.name.as_bytes()), span_of(head, h.value)])
            .collect();
        RawFields::new(Bytes::from_static(head), fields)
    }

    #[test]
    fn raw_fields_read_as_the_map_of_them_does() {
        let fields = raw(b"GET / HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\ncookie: c=1\r\nx-two: 2\r\nX-Bin: \x80\r\n\r\n");
        let map = fields.to_header_map(0).unwrap();
        for name in ["host", "x-two", "cookie", "x-bin", "absent"] {
            let name = HeaderName::from_static(name);
            let raw: Vec<&[u8]> = fields.values_of(&name).collect();
            let mapped: Vec<&[u8]> = map.values_of(&name).collect();
            assert_eq!(raw, mapped, "{name}");
            assert_eq!(fields.text(&name), map.text(&name), "{name}");
            assert_eq!(fields.has(&name), map.has(&name), "{name}");
            let pair = [name.clone(), HeaderName::from_static("absent")];
            assert_eq!(fields.has_any(&pair), map.has_any(&pair), "{name}");
        }
        assert_eq!(
            fields.values_of(&HeaderName::from_static("x-two")).count(),
            2
        );
        assert_eq!(fields.text(&HeaderName::from_static("x-bin")), None);
        assert_eq!(fields.iter().count(), 5);
    }

    #[test]
    fn values_are_checked_as_http_checks_them() {
        for b in 0..=255u8 {
            let value = [b'a', b];
            assert_eq!(
                valid_value(&value),
                HeaderValue::from_bytes(&value).is_ok(),
                "{b}"
            );
            let text = HeaderValue::from_bytes(&value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            assert_eq!(visible(&value).map(str::to_owned), text, "{b}");
        }
    }
}
