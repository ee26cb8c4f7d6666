//! Where a part of an HTTP head lies in the bytes it was parsed from:
//! `httparse` lends slices of the read buffer, and the head is then split
//! off that buffer as `Bytes`, so the parts are kept as offsets to become
//! slices of the split head (shared, not copied). Used by the proxy's
//! lane for requests and by `box_wire` for box answers.

/// Offset and length of a part in its head. A head is at most tens of
/// KiB (`max_header_bytes`, `box_wire`'s limit), so `u32` holds both.
pub(crate) type Span = [u32; 2];

/// The span of `part`, a slice of `head`.
pub(crate) fn of(head: &[u8], part: &[u8]) -> Span {
    let at = part.as_ptr() as usize - head.as_ptr() as usize;
    [at as u32, part.len() as u32]
}

/// The span as a range of the head's bytes.
pub(crate) fn range([at, len]: Span) -> std::ops::Range<usize> {
    at as usize..(at + len) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_finds_its_part_again() {
        let head = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let part = &head[17..21];
        let span = of(head, part);
        assert_eq!(span, [17, 4]);
        assert_eq!(&head[range(span)], b"host");
    }
}
