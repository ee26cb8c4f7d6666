//! The Prometheus text exposition format (0.0.4, and the OpenMetrics text
//! a box may serve instead), parsed in one pass with the telemetry
//! contract's limits checked as it goes: the body size, the number of
//! samples, label count and length. A breach ends the parse with a
//! [`ParseError`] naming it; nothing of that scrape is used. Label values
//! lose control and bidi characters (`edge_core::text`). Timestamps and
//! exemplars are read past and dropped: the cloud stamps samples with the
//! time it scraped.

use std::borrow::Cow;
use std::collections::HashMap;

/// What one scrape may hold (the telemetry contract's numbers by default).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_samples: usize,
    pub max_label_value_chars: usize,
    pub max_labels: usize,
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_samples: 2_000,
            max_label_value_chars: 128,
            max_labels: 16,
            max_name_bytes: 200,
        }
    }
}

/// The largest exposition body a scrape reads (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// The declared type of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// In the order the box wrote them.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// A parsed body: its samples in order and the declared family types.
#[derive(Debug, Default)]
pub struct Exposition<'a> {
    pub samples: Vec<Sample<'a>>,
    pub kinds: HashMap<&'a str, Kind>,
}

impl<'a> Exposition<'a> {
    /// Add `other`'s samples of the families this one lacks (the agent's
    /// host figures where the box serves none of its own).
    pub fn fill_from(&mut self, other: Exposition<'a>) {
        let have: std::collections::HashSet<&str> = self.samples.iter().map(|s| s.name).collect();
        for s in other.samples {
            if !have.contains(s.name) {
                self.samples.push(s);
            }
        }
        for (name, kind) in other.kinds {
            self.kinds.entry(name).or_insert(kind);
        }
    }

    /// The declared kind of the family that sample `name` belongs to
    /// (`x_bucket`, `x_sum`, `x_count` belong to histogram `x`).
    pub fn kind_of(&self, name: &str) -> Kind {
        if let Some(k) = self.kinds.get(name) {
            return *k;
        }
        for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(k) = self.kinds.get(base) {
                    return *k;
                }
            }
        }
        Kind::Untyped
    }
}

/// Why a scrape's body was refused (its `code` is what the scrape record
/// and the API show).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("more than {0} samples")]
    TooManySamples(usize),
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: &'static str },
    #[error("line {0}: a label value is longer than the limit")]
    LabelTooLong(usize),
    #[error("line {0}: too many labels")]
    TooManyLabels(usize),
    #[error("the body is not UTF-8")]
    NotUtf8,
}

impl ParseError {
    /// A stable short code for records and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BodyTooLarge(_) => "body_too_large",
            Self::TooManySamples(_) => "too_many_samples",
            Self::Malformed { .. } => "malformed",
            Self::LabelTooLong(_) => "label_too_long",
            Self::TooManyLabels(_) => "too_many_labels",
            Self::NotUtf8 => "not_utf8",
        }
    }
}

/// Parse `body` within `limits`.
pub fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<Exposition<'a>, ParseError> {
    if body.len() > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge(limits.max_body_bytes));
    }
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let mut out = Exposition::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("EOF") => break,
                Some("TYPE") => {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        return Err(malformed(line_no, "TYPE needs a name and a type"));
                    };
                    let kind = match kind {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" | "gaugehistogram" => Kind::Histogram,
                        "summary" => Kind::Summary,
                        _ => Kind::Untyped,
                    };
                    out.kinds.insert(name, kind);
                }
                _ => {}
            }
            continue;
        }
        if out.samples.len() >= limits.max_samples {
            return Err(ParseError::TooManySamples(limits.max_samples));
        }
        out.samples.push(sample(line, line_no, limits)?);
    }
    Ok(out)
}

fn malformed(line: usize, what: &'static str) -> ParseError {
    ParseError::Malformed { line, what }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The leading name of `s` (`colon` allows `:`, as metric names do).
fn take_name(s: &str, colon: bool) -> (&str, &str) {
    let bytes = s.as_bytes();
    let ok_start = |b: u8| is_name_start(b) && (colon || b != b':');
    let ok = |b: u8| is_name_char(b) && (colon || b != b':');
    if bytes.first().is_none_or(|b| !ok_start(*b)) {
        return ("", s);
    }
    let end = bytes.iter().position(|b| !ok(*b)).unwrap_or(bytes.len());
    s.split_at(end)
}

fn sample<'a>(line: &'a str, no: usize, limits: &Limits) -> Result<Sample<'a>, ParseError> {
    let (name, mut rest) = take_name(line, true);
    if name.is_empty() {
        return Err(malformed(no, "a sample must start with a metric name"));
    }
    if name.len() > limits.max_name_bytes {
        return Err(malformed(no, "metric name too long"));
    }
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = take_name(rest, false);
            if label.is_empty() || label.len() > limits.max_name_bytes {
                return Err(malformed(no, "bad label name"));
            }
            let after = after.trim_start();
            let Some(after) = after.strip_prefix('=') else {
                return Err(malformed(no, "a label name must be followed by ="));
            };
            let Some(after) = after.trim_start().strip_prefix('"') else {
                return Err(malformed(no, "a label value must be quoted"));
            };
            let (value, after) = label_value(after, no, limits)?;
            if labels.len() >= limits.max_labels {
                return Err(ParseError::TooManyLabels(no));
            }
            labels.push((label, value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(malformed(no, "labels must be separated by commas"));
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(malformed(no, "a value must follow the name after a space"));
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| malformed(no, "missing value"))?;
    let value = parse_value(value).ok_or_else(|| malformed(no, "the value is not a number"))?;
    match fields.next() {
        None | Some("#") => {}
        Some(ts) if ts.parse::<f64>().is_ok() => {
            if !matches!(fields.next(), None | Some("#")) {
                return Err(malformed(no, "unexpected text after the timestamp"));
            }
        }
        Some(_) => return Err(malformed(no, "unexpected text after the value")),
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Prometheus spells the special values `NaN`, `+Inf`, `-Inf` (any case).
fn parse_value(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        // Rust also accepts "infinity"; the format does not.
        lower if lower.contains("inf") => None,
        _ => s.parse().ok(),
    }
}

/// A quoted label value after its opening quote: the value (escapes
/// resolved, control and bidi characters removed) and the rest after the
/// closing quote.
fn label_value<'a>(
    s: &'a str,
    no: usize,
    limits: &Limits,
) -> Result<(Cow<'a, str>, &'a str), ParseError> {
    let bytes = s.as_bytes();
    let mut end = None;
    let mut escaped = false;
    for (i, b) in bytes.iter().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.ok_or_else(|| malformed(no, "unterminated label value"))?;
    let raw = &s[..end];
    let rest = &s[end + 1..];
    let clean = |c: char| !c.is_control() && !edge_core::text::is_bidi_control(c);
    let value: Cow<'a, str> = if raw.contains('\\') || !raw.chars().all(clean) {
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            let c = if c == '\\' {
                match chars.next() {
                    Some('n') => '\n',
                    Some(other) => other,
                    None => break,
                }
            } else {
                c
            };
            if clean(c) {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    };
    if value.chars().count() > limits.max_label_value_chars {
        return Err(ParseError::LabelTooLong(no));
    }
    Ok((value, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn ok(body: &str) -> Exposition<'_> {
        parse(body.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn reads_families_labels_escapes_and_special_values() {
        let body = "# HELP edge_inference_frames_total Frames.\n\
            # TYPE edge_inference_frames_total counter\n\
            edge_inference_frames_total{model=\"yolo\",stream=\"cam \\\"1\\\"\"} 1027 1700000000000\n\
            edge_host_load1 0.5\r\n\
            edge_accel_power_watts{accel=\"npu0\",} +Inf\n\
            x{a=\"b\"} NaN # {trace_id=\"1\"} 1\n\
            # EOF\n\
            ignored 1\n";
        let e = ok(body);
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].label("stream"), Some("cam \"1\""));
        assert_eq!(e.samples[0].value, 1027.0);
        assert_eq!(e.kind_of("edge_inference_frames_total"), Kind::Counter);
        assert_eq!(e.samples[1].value, 0.5);
        assert!(e.samples[2].value.is_infinite());
        assert!(e.samples[3].value.is_nan());
    }

    #[test]
    fn control_and_bidi_characters_leave_label_values() {
        let e = ok("m{s=\"a\u{202E}b\u{7}c\\n\"} 1\n");
        assert_eq!(e.samples[0].label("s"), Some("abc"));
    }

    #[test]
    fn limits_end_the_parse_with_their_reason() {
        let l = Limits::default();
        let big = vec![b'#'; l.max_body_bytes + 1];
        assert_eq!(parse(&big, &l).unwrap_err().code(), "body_too_large");
        let many: String = (0..=l.max_samples)
            .map(|i| format!("m{{i=\"{i}\"}} 1\n"))
            .collect();
        assert_eq!(
            parse(many.as_bytes(), &l).unwrap_err().code(),
            "too_many_samples"
        );
        let long = format!("m{{a=\"{}\"}} 1", "x".repeat(129));
        assert_eq!(
            parse(long.as_bytes(), &l).unwrap_err().code(),
            "label_too_long"
        );
        let labels: String = (0..17).map(|i| format!("l{i}=\"v\",")).collect();
        let wide = format!("m{{{labels}}} 1");
        assert_eq!(
            parse(wide.as_bytes(), &l).unwrap_err().code(),
            "too_many_labels"
        );
        assert_eq!(parse(b"m \xff", &l).unwrap_err().code(), "not_utf8");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        for (body, line) in [
            ("m", 1),
            ("ok 1\n{a=\"b\"} 1", 2),
            ("m{a=b} 1", 1),
            ("m{a=\"b} 1", 1),
            ("m{a=\"b\" c=\"d\"} 1", 1),
            ("m 1 2 3", 1),
            ("m one", 1),
            ("m infinity", 1),
            ("m{a=\"b\"}1", 1),
        ] {
            match parse(body.as_bytes(), &Limits::default()) {
                Err(ParseError::Malformed { line: l, .. }) => assert_eq!(l, line, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
