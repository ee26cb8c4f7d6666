//! The compact form of a device's samples (ADR 025). A [`Window`] holds the
//! scrapes of one device over up to five minutes: their times and, per
//! series, a value or a gap per scrape. [`encode`] stores times as
//! delta-of-delta varints (a steady 15 s interval costs a byte a scrape)
//! and each series as integers of its resolution (`10^exp`), delta
//! zig-zag varints with a presence bitmap, so a slowly moving figure costs
//! about a byte a sample. [`Summary`] is a window's five-minute rollup
//! (count, min, mean, max, p95) per series, stored as `f32`. Decoding
//! checks every length and never trusts a count it has not bounded.

use std::collections::BTreeMap;

/// Most scrapes one window holds (a 5-minute window at 1 s is 300).
pub const MAX_SAMPLES: usize = 1024;
/// Most series one window holds.
pub const MAX_SERIES: usize = 4096;
const VERSION: u8 = 1;
/// Integers kept within ±2^53 so they round-trip through `f64`.
const MAX_INT: f64 = 9_007_199_254_740_992.0;

/// One series' values within a window: one entry per scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub exp: i8,
    pub values: Vec<Option<f64>>,
}

/// The samples of one device over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub times: Vec<i64>,
    pub series: BTreeMap<u32, Column>,
}

impl Window {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Add one scrape at `at_ms` with `(series id, exp, value)` entries;
    /// `false` (and nothing added) when the window is full.
    pub fn push(&mut self, at_ms: i64, values: &[(u32, i8, f64)]) -> bool {
        let n = self.times.len();
        if n >= MAX_SAMPLES {
            return false;
        }
        self.times.push(at_ms);
        for (id, exp, v) in values {
            if self.series.len() >= MAX_SERIES && !self.series.contains_key(id) {
                continue;
            }
            let col = self.series.entry(*id).or_insert_with(|| Column {
                exp: *exp,
                values: vec![None; n],
            });
            if col.values.len() == n {
                col.values.push(Some(*v));
            }
        }
        for col in self.series.values_mut() {
            col.values.resize(n + 1, None);
        }
        true
    }
}

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt telemetry window: {0}")]
pub struct CodecError(&'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn scale(v: f64, exp: i8) -> i64 {
    let scaled = (v / 10f64.powi(i32::from(exp))).round();
    scaled.clamp(-MAX_INT, MAX_INT) as i64
}

/// The bytes of `w`, its times relative to `w.times[0]`.
pub fn encode(w: &Window) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + w.series.len() * (8 + w.len()));
    out.push(VERSION);
    put_varint(&mut out, w.len() as u64);
    let mut prev = w.times.first().copied().unwrap_or(0);
    let mut prev_delta = 0i64;
    for t in w.times.iter().skip(1) {
        let delta = t.saturating_sub(prev);
        put_varint(&mut out, zigzag(delta.saturating_sub(prev_delta)));
        prev_delta = delta;
        prev = *t;
    }
    put_varint(&mut out, w.series.len() as u64);
    for (id, col) in &w.series {
        out.extend_from_slice(&id.to_le_bytes());
        out.push(col.exp as u8);
        let mut bitmap = vec![0u8; w.len().div_ceil(8)];
        for (i, v) in col.values.iter().enumerate() {
            if v.is_some() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        let mut last = 0i64;
        for v in col.values.iter().flatten() {
            let x = scale(*v, col.exp);
            put_varint(&mut out, zigzag(x.wrapping_sub(last)));
            last = x;
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.pos).ok_or(CodecError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError("length"))?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(CodecError("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn count(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or(CodecError("count out of range"))
    }
}

/// Read back what [`encode`] wrote for a window whose first scrape was at
/// `start_ms`.
pub fn decode(start_ms: i64, bytes: &[u8]) -> Result<Window, CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let n = r.count(MAX_SAMPLES)?;
    let mut times = Vec::with_capacity(n);
    if n > 0 {
        times.push(start_ms);
        let (mut t, mut delta) = (start_ms, 0i64);
        for _ in 1..n {
            delta = delta.saturating_add(unzigzag(r.varint()?));
            t = t.saturating_add(delta);
            times.push(t);
        }
    }
    let count = r.count(MAX_SERIES)?;
    let mut series = BTreeMap::new();
    for _ in 0..count {
        let id = r.take(4)?;
        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        let exp = r.byte()? as i8;
        if !(-18..=18).contains(&exp) {
            return Err(CodecError("resolution out of range"));
        }
        let bitmap = r.take(n.div_ceil(8))?.to_vec();
        let unit = 10f64.powi(i32::from(exp));
        let mut last = 0i64;
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            if bitmap[i / 8] & (1 << (i % 8)) == 0 {
                values.push(None);
                continue;
            }
            last = last.wrapping_add(unzigzag(r.varint()?));
            values.push(Some(last as f64 * unit));
        }
        series.insert(id, Column { exp, values });
    }
    if r.pos != bytes.len() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(Window { times, series })
}

/// One series' five-minute rollup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub id: u32,
    pub count: u16,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub p95: f64,
}

/// The rollup of every series in `w` that has a value.
pub fn summarize(w: &Window) -> Vec<Summary> {
    w.series
        .iter()
        .filter_map(|(id, col)| {
            let mut vals: Vec<f64> = col.values.iter().flatten().copied().collect();
            if vals.is_empty() {
                return None;
            }
            vals.sort_by(f64::total_cmp);
            let n = vals.len();
            // Nearest rank.
            let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
            Some(Summary {
                id: *id,
                count: u16::try_from(n).unwrap_or(u16::MAX),
                min: vals[0],
                avg: vals.iter().sum::<f64>() / n as f64,
                max: vals[n - 1],
                p95: vals[rank - 1],
            })
        })
        .collect()
}

/// The bytes of a rollup: 22 per series.
pub fn encode_summaries(s: &[Summary]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + s.len() * 22);
    out.push(VERSION);
    put_varint(&mut out, s.len() as u64);
    for x in s {
        out.extend_from_slice(&x.id.to_le_bytes());
        out.extend_from_slice(&x.count.to_le_bytes());
        for v in [x.min, x.avg, x.max, x.p95] {
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
    }
    out
}

/// Read back what [`encode_summaries`] wrote.
pub fn decode_summaries(bytes: &[u8]) -> Result<Vec<Summary>, CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let n = r.count(MAX_SERIES)?;
    let mut out = Vec::with_capacity(n);
    let f = |b: &[u8]| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for _ in 0..n {
        let b = r.take(22)?;
        out.push(Summary {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            count: u16::from_le_bytes([b[4], b[5]]),
            min: f(&b[6..10]),
            avg: f(&b[10..14]),
            max: f(&b[14..18]),
            p95: f(&b[18..22]),
        });
    }
    if r.pos != bytes.len() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn window() -> Window {
        let mut w = Window::default();
        for i in 0..20i64 {
            let t = 1_700_000_000_000 + i * 15_000 + (i % 3);
            let mut vals = vec![(7, -2, 29.5 + (i % 4) as f64 * 0.25), (9, -4, 0.4321)];
            if i % 5 != 0 {
                vals.push((11, 0, 1e6 + i as f64));
            }
            assert!(w.push(t, &vals));
        }
        w
    }

    #[test]
    fn a_window_round_trips_at_its_resolution_in_a_few_bytes_a_sample() {
        let w = window();
        let bytes = encode(&w);
        let back = decode(w.times[0], &bytes).unwrap();
        assert_eq!(back.times, w.times);
        assert_eq!(back.series.len(), 3);
        for (id, col) in &w.series {
            let got = &back.series[id];
            assert_eq!(got.values.len(), col.values.len());
            for (a, b) in col.values.iter().zip(&got.values) {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        assert!((a - b).abs() <= 10f64.powi(col.exp.into()) / 2.0 + 1e-9)
                    }
                    (None, None) => {}
                    other => panic!("presence differs: {other:?}"),
                }
            }
        }
        // 56 values and 20 times in well under 3 bytes a value.
        assert!(bytes.len() < 150, "{} bytes", bytes.len());
    }

    #[test]
    fn corrupt_bytes_are_refused_not_trusted() {
        let bytes = encode(&window());
        for cut in 0..bytes.len() {
            assert!(decode(0, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = vec![VERSION];
        put_varint(&mut huge, u64::MAX);
        assert!(decode(0, &huge).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(0, &extra).is_err());
    }

    #[test]
    fn rollups_hold_min_mean_max_and_p95() {
        let s = summarize(&window());
        let fps = s.iter().find(|x| x.id == 7).unwrap();
        assert_eq!((fps.count, fps.min, fps.max), (20, 29.5, 30.25));
        assert_eq!(fps.p95, 30.25);
        assert!((fps.avg - 29.875).abs() < 1e-9);
        assert_eq!(s.iter().find(|x| x.id == 11).unwrap().count, 16);
        let back = decode_summaries(&encode_summaries(&s)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].count, s[0].count);
        assert!(decode_summaries(&encode_summaries(&s)[..10]).is_err());
    }
}
