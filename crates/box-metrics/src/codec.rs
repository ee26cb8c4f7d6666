//! The compact form of a device's samples (ADR 025). A [`Window`] holds the
//! scrapes of one device over a window (the relay's is an hour): their
//! times and, per series, a value or a gap per scrape. [`encode`] stores
//! times as delta-of-delta varints (a steady 15 s interval costs a byte a
//! scrape) and each series as integers of its resolution (`10^exp`), delta
//! zig-zag varints with a presence bitmap, so a slowly moving figure costs
//! about a byte a sample; a series with a value at every scrape needs no
//! bitmap, and one that did not change is one number. [`Summary`] is a
//! window's five-minute rollup (count, min, mean, max, p95) per series, as
//! integers of the same resolution. Decoding checks every length and never
//! trusts a count it has not bounded. [`encode`] and [`encode_buckets`]
//! are the reference form of the bytes; the relay writes the same bytes
//! as it goes with [`crate::recorder::Recorder`].

use std::collections::BTreeMap;

/// Most scrapes one window holds (a 5-minute window at 1 s is 300).
pub const MAX_SAMPLES: usize = 1024;
/// Most series one window holds.
pub const MAX_SERIES: usize = 4096;
pub(crate) const VERSION: u8 = 1;
/// Integers the encoder has ever written lie within ±2^53; beyond that
/// stored bytes are corrupt.
const MAX_INT: i64 = 1 << 53;

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

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// An integer the encoder could have written (within ±2^53), as the
/// value it stands for at `10^exp`. Beyond [`max_units`] it is held at
/// that bound, as [`scale`] holds what it writes, so a window read back
/// and written again keeps every value (earlier windows were held at
/// ±2^53 alone).
fn value(x: i64, exp: i8) -> Result<f64, CodecError> {
    if x.unsigned_abs() > MAX_INT.unsigned_abs() {
        return Err(CodecError("value out of range"));
    }
    let m = max_units(exp);
    Ok(from_units(x.clamp(-m, m), exp))
}

/// The most units of `10^exp` whose value comes back as the same integer
/// through `f64`: when `exp ≥ 0`, `x · 10^exp` is `x · 5^exp` (exact below
/// 2^53) times a power of two, so exact, and dividing it gives `x`; below,
/// `x / 10^-exp` and back again err by at most `|x| · 2^-52`, under a
/// quarter of a unit up to 2^50.
fn max_units(exp: i8) -> i64 {
    if exp >= 0 {
        MAX_INT / 5i64.pow(u32::from(exp.unsigned_abs()))
    } else {
        1 << 50
    }
}

/// `10^|exp|`, exact for the resolutions windows keep (|exp| ≤ 18).
fn power(exp: i8) -> f64 {
    10f64.powi(i32::from(exp.unsigned_abs()))
}

/// What `x` units of `10^exp` stand for, as the nearest double to that
/// decimal (so it prints short: `0.442`, not `0.44200000000000006`).
fn from_units(x: i64, exp: i8) -> f64 {
    if exp < 0 {
        x as f64 / power(exp)
    } else {
        x as f64 * power(exp)
    }
}

/// `v` in whole units of `10^exp`, held within [`max_units`].
pub(crate) fn scale(v: f64, exp: i8) -> i64 {
    let m = max_units(exp);
    units(v, exp).clamp(-m as f64, m as f64) as i64
}

/// `v` in whole units of `10^exp`, unclamped.
fn units(v: f64, exp: i8) -> f64 {
    if exp < 0 {
        (v * power(exp)).round()
    } else {
        (v / power(exp)).round()
    }
}

/// `v` at the resolution `10^exp` the windows keep it at, as the nearest
/// double to that decimal; `v` itself beyond what a window can hold.
pub fn at_resolution(v: f64, exp: i8) -> f64 {
    let scaled = units(v, exp);
    if !scaled.is_finite() || scaled.abs() > max_units(exp) as f64 {
        return v;
    }
    from_units(scaled as i64, exp)
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
        let scaled: Vec<i64> = col
            .values
            .iter()
            .flatten()
            .map(|v| scale(*v, col.exp))
            .collect();
        let dense = scaled.len() == w.len();
        let constant = scaled.windows(2).all(|p| p[0] == p[1]);
        out.push(u8::from(dense) | (u8::from(constant) << 1));
        if !dense {
            let mut bitmap = vec![0u8; w.len().div_ceil(8)];
            for (i, v) in col.values.iter().enumerate() {
                if v.is_some() {
                    bitmap[i / 8] |= 1 << (i % 8);
                }
            }
            out.extend_from_slice(&bitmap);
        }
        if constant {
            put_varint(&mut out, zigzag(scaled.first().copied().unwrap_or(0)));
            continue;
        }
        let mut last = 0i64;
        for x in scaled {
            put_varint(&mut out, zigzag(x.wrapping_sub(last)));
            last = x;
        }
    }
    out
}

/// Column flags: every scrape has a value (no bitmap follows).
pub(crate) const DENSE: u8 = 1;
/// Column flags: one value stands for every present one.
pub(crate) const CONSTANT: u8 = 2;

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

    /// The next series' id; the encoders write them in ascending order,
    /// so one at or below `prev` is corrupt.
    fn series_id(&mut self, prev: &mut Option<u32>) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if prev.is_some_and(|p| id <= p) {
            return Err(CodecError("series out of order"));
        }
        *prev = Some(id);
        Ok(id)
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
            // The encoder's times never come near i64's ends; bytes that
            // would are corrupt, and refusing them keeps every decoded
            // time exactly what its deltas say.
            delta = delta
                .checked_add(unzigzag(r.varint()?))
                .ok_or(CodecError("time out of range"))?;
            t = t
                .checked_add(delta)
                .ok_or(CodecError("time out of range"))?;
            times.push(t);
        }
    }
    let count = r.count(MAX_SERIES)?;
    let mut series = BTreeMap::new();
    let mut prev_id = None;
    for _ in 0..count {
        let id = r.series_id(&mut prev_id)?;
        let exp = r.byte()? as i8;
        if !(-18..=18).contains(&exp) {
            return Err(CodecError("resolution out of range"));
        }
        let flags = r.byte()?;
        if flags & !(DENSE | CONSTANT) != 0 {
            return Err(CodecError("unknown column flags"));
        }
        let bitmap = if flags & DENSE != 0 {
            None
        } else {
            Some(r.take(n.div_ceil(8))?.to_vec())
        };
        let constant = if flags & CONSTANT != 0 {
            Some(unzigzag(r.varint()?))
        } else {
            None
        };
        let mut last = 0i64;
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            if bitmap
                .as_ref()
                .is_some_and(|b| b[i / 8] & (1 << (i % 8)) == 0)
            {
                values.push(None);
                continue;
            }
            last = match constant {
                Some(c) => c,
                None => last.wrapping_add(unzigzag(r.varint()?)),
            };
            values.push(Some(value(last, exp)?));
        }
        series.insert(id, Column { exp, values });
    }
    if r.pos != bytes.len() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(Window { times, series })
}

/// One series' rollup over one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub id: u32,
    /// The series' resolution (values are integers of `10^exp`).
    pub exp: i8,
    pub count: u16,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub p95: f64,
}

/// The rollups of `w` per bucket of `bucket_ms`: each bucket's start and
/// its summaries, oldest first.
pub fn summarize_buckets(w: &Window, bucket_ms: i64) -> Vec<(i64, Vec<Summary>)> {
    let mut out = Vec::new();
    let mut first = 0;
    while first < w.len() {
        let bucket = w.times[first] - w.times[first].rem_euclid(bucket_ms.max(1));
        let end = (first..w.len())
            .find(|i| w.times[*i] >= bucket + bucket_ms)
            .unwrap_or(w.len());
        out.push((bucket, summarize_range(w, first, end)));
        first = end;
    }
    out
}

fn summarize_range(w: &Window, from: usize, to: usize) -> Vec<Summary> {
    w.series
        .iter()
        .filter_map(|(id, col)| {
            let mut vals: Vec<f64> = col.values
                [from.min(col.values.len())..to.min(col.values.len())]
                .iter()
                .flatten()
                .copied()
                .collect();
            summarize(*id, col.exp, &mut vals)
        })
        .collect()
}

/// One series' rollup of `vals` (sorted in place); `None` when empty.
pub(crate) fn summarize(id: u32, exp: i8, vals: &mut [f64]) -> Option<Summary> {
    if vals.is_empty() {
        return None;
    }
    vals.sort_by(f64::total_cmp);
    let n = vals.len();
    // Nearest rank.
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some(Summary {
        id,
        exp,
        count: u16::try_from(n).unwrap_or(u16::MAX),
        min: vals[0],
        avg: vals.iter().sum::<f64>() / n as f64,
        max: vals[n - 1],
        p95: vals[rank - 1],
    })
}

/// Most buckets one rollup row holds (an hour of five-minute buckets, and
/// room for a window that ran longer).
pub const MAX_BUCKETS: usize = 64;

/// The bytes of a window's bucketed rollups (from [`summarize_buckets`]),
/// series by series: the buckets' distances from `base_ms`, then per
/// series its id and resolution once and per bucket its count (0: no
/// value), its min as a change from the previous bucket's and the mean,
/// max and p95 above it, all integers of the resolution.
pub fn encode_buckets(base_ms: i64, bucket_ms: i64, buckets: &[(i64, Vec<Summary>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + buckets.len() * 64);
    out.push(VERSION);
    put_varint(&mut out, buckets.len() as u64);
    for (start, _) in buckets {
        put_varint(
            &mut out,
            ((start - base_ms) / bucket_ms.max(1)).max(0) as u64,
        );
    }
    let mut series: BTreeMap<u32, i8> = BTreeMap::new();
    for (_, sums) in buckets {
        for x in sums {
            series.entry(x.id).or_insert(x.exp);
        }
    }
    put_varint(&mut out, series.len() as u64);
    for (id, exp) in series {
        out.extend_from_slice(&id.to_le_bytes());
        out.push(exp as u8);
        let mut last_min = 0i64;
        for (_, sums) in buckets {
            let x = sums.iter().find(|x| x.id == id);
            put_bucket(&mut out, x, exp, &mut last_min);
        }
    }
    out
}

/// One series' entry for one bucket in [`encode_buckets`]' form: its
/// count (0: no value), then its min as a change from `last_min` and the
/// mean, max and p95 above the min.
pub(crate) fn put_bucket(out: &mut Vec<u8>, x: Option<&Summary>, exp: i8, last_min: &mut i64) {
    let Some(x) = x else {
        put_varint(out, 0);
        return;
    };
    put_varint(out, u64::from(x.count.max(1)));
    let min = scale(x.min, exp);
    put_varint(out, zigzag(min.wrapping_sub(*last_min)));
    *last_min = min;
    for v in [x.avg, x.max, x.p95] {
        put_varint(out, zigzag(scale(v, exp).wrapping_sub(min)));
    }
}

/// Read back what [`encode_buckets`] wrote: each bucket's start and series.
pub fn decode_buckets(
    base_ms: i64,
    bucket_ms: i64,
    bytes: &[u8],
) -> Result<Vec<(i64, Vec<Summary>)>, CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let n = r.count(MAX_BUCKETS)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.count(MAX_BUCKETS * 4)? as i64;
        out.push((base_ms.saturating_add(k * bucket_ms), Vec::new()));
    }
    let count = r.count(MAX_SERIES)?;
    let mut prev_id = None;
    for _ in 0..count {
        let id = r.series_id(&mut prev_id)?;
        let exp = r.byte()? as i8;
        if !(-18..=18).contains(&exp) {
            return Err(CodecError("resolution out of range"));
        }
        let mut last_min = 0i64;
        for (_, sums) in out.iter_mut() {
            let c = u16::try_from(r.varint()?).map_err(|_| CodecError("count out of range"))?;
            if c == 0 {
                continue;
            }
            let min = last_min.wrapping_add(unzigzag(r.varint()?));
            last_min = min;
            let mut above = [0f64; 3];
            for a in &mut above {
                *a = value(min.wrapping_add(unzigzag(r.varint()?)), exp)?;
            }
            sums.push(Summary {
                id,
                exp,
                count: c,
                min: value(min, exp)?,
                avg: above[0],
                max: above[1],
                p95: above[2],
            });
        }
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

    #[test]
    fn values_at_resolution_print_short_and_stay_within_half_a_unit() {
        assert_eq!(
            at_resolution(0.442_378_222_942_352_3, -3).to_string(),
            "0.442"
        );
        assert_eq!(at_resolution(53.94, -1).to_string(), "53.9");
        assert_eq!(at_resolution(4.0, 0), 4.0);
        assert_eq!(at_resolution(1e300, -3), 1e300);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..10_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let v = (rng % 10_000_000) as f64 / 7.0 - 500_000.0;
            for exp in [-3_i8, -1, 0, 2] {
                let unit = 10f64.powi(exp.into());
                assert!(
                    (at_resolution(v, exp) - v).abs() <= unit / 2.0 + 1e-9,
                    "{v} {exp}"
                );
            }
        }
    }

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
    fn steady_and_complete_series_cost_almost_nothing() {
        let mut w = Window::default();
        for i in 0..20i64 {
            assert!(w.push(i * 15_000, &[(1, 0, 4.0), (2, -1, 1.5 + i as f64)]));
        }
        let bytes = encode(&w);
        // Per series: id 4, exp 1, flags 1; the constant is one byte, the
        // ramp a byte a value; times a byte each.
        assert!(bytes.len() <= 2 + 19 + 7 + 26 + 4, "{} bytes", bytes.len());
        let back = decode(0, &bytes).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn a_window_rolls_up_per_bucket() {
        let w = window();
        // 20 scrapes 15 s apart: at most four a minute, all of them counted.
        let b = summarize_buckets(&w, 60_000);
        assert!((5..=6).contains(&b.len()), "{}", b.len());
        assert!(b
            .iter()
            .all(|(t, s)| t % 60_000 == 0 && (1..=4).contains(&s[0].count)));
        assert_eq!(
            b.iter().map(|(_, s)| u32::from(s[0].count)).sum::<u32>(),
            20
        );
        let base = b[0].0;
        let bytes = encode_buckets(base, 60_000, &b);
        let back = decode_buckets(base, 60_000, &bytes).unwrap();
        assert_eq!(
            back.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            b.iter().map(|(t, _)| *t).collect::<Vec<_>>()
        );
        assert!(decode_buckets(base, 60_000, &bytes[..bytes.len() - 1]).is_err());
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
        // Found by the `exposition` fuzz target: a constant beyond what the
        // encoder writes (±2^53) is corrupt, not a value.
        let beyond = [
            1, 2, 0x0f, 1, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x28, 0,
        ];
        assert!(decode(0, &beyond).is_err());
    }

    #[test]
    fn every_integer_a_window_holds_reads_back_as_itself() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for exp in -18..=18i8 {
            let m = max_units(exp);
            let mut xs = vec![0, 1, -1, m, -m, m - 1, 1 - m, m / 3, -m / 7];
            for _ in 0..20_000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                xs.push((rng % (2 * m as u64 + 1)) as i64 - m);
            }
            for x in xs {
                assert_eq!(scale(from_units(x, exp), exp), x, "{x} at 10^{exp}");
            }
            // Beyond the bound a value is held at it, both ways.
            assert_eq!(scale(from_units(m, exp) * 4.0, exp), m);
            assert_eq!(value(MAX_INT, exp).unwrap(), from_units(m, exp));
            assert!(value(MAX_INT + 1, exp).is_err());
        }
    }

    #[test]
    fn odd_bytes_are_refused_or_read_back_the_same() {
        // From the `exposition` target: a value of ~2^52 tens decoded to a
        // double that re-encoded one unit off.
        let found = [
            1u8, 4, 255, 255, 255, 255, 255, 255, 255, 22, 0, 0, 1, 1, 0, 52, 91, 1, 1, 0, 52, 255,
            255, 255, 250, 255, 255, 255, 15, 16,
        ];
        let w = decode(0, &found).unwrap();
        assert_eq!(decode(0, &encode(&w)).unwrap(), w);
        // The encoders write series in ascending order; a repeat is corrupt.
        let two = |a: u8, b: u8| {
            let mut w = vec![VERSION, 1, 2];
            for id in [a, b] {
                w.extend_from_slice(&[id, 0, 0, 0, 0, DENSE | CONSTANT, 2]);
            }
            w
        };
        assert_eq!(decode(0, &two(3, 4)).unwrap().series.len(), 2);
        assert_eq!(
            decode(0, &two(4, 4)),
            Err(CodecError("series out of order"))
        );
        assert_eq!(
            decode(0, &two(4, 3)),
            Err(CodecError("series out of order"))
        );
        let rollup = |a: u8, b: u8| {
            let mut r = vec![VERSION, 1, 0, 2];
            for id in [a, b] {
                r.extend_from_slice(&[id, 0, 0, 0, 0, 1, 2, 0, 0, 0]);
            }
            r
        };
        assert_eq!(decode_buckets(0, 1, &rollup(3, 4)).unwrap()[0].1.len(), 2);
        assert_eq!(
            decode_buckets(0, 1, &rollup(3, 3)),
            Err(CodecError("series out of order"))
        );
        // Times whose deltas run past i64's end are corrupt, not clamped.
        let mut past = vec![VERSION, 3];
        put_varint(&mut past, zigzag(i64::MAX));
        put_varint(&mut past, zigzag(1));
        past.push(0);
        assert_eq!(decode(0, &past), Err(CodecError("time out of range")));
        let mut delta_past = vec![VERSION, 3];
        put_varint(&mut delta_past, zigzag(-5));
        put_varint(&mut delta_past, zigzag(i64::MIN));
        delta_past.push(0);
        assert_eq!(decode(0, &delta_past), Err(CodecError("time out of range")));
    }

    #[test]
    fn rollups_hold_min_mean_max_and_p95() {
        // The whole window lies in one hour: one bucket holds it all.
        let hour = 3_600_000;
        let buckets = summarize_buckets(&window(), hour);
        assert_eq!(buckets.len(), 1);
        let s = &buckets[0].1;
        let fps = s.iter().find(|x| x.id == 7).unwrap();
        assert_eq!((fps.count, fps.min, fps.max), (20, 29.5, 30.25));
        assert_eq!(fps.p95, 30.25);
        assert!((fps.avg - 29.875).abs() < 1e-9);
        assert_eq!(s.iter().find(|x| x.id == 11).unwrap().count, 16);
        let bytes = encode_buckets(buckets[0].0, hour, &buckets);
        let back = decode_buckets(buckets[0].0, hour, &bytes).unwrap();
        assert_eq!(back[0].1.len(), 3);
        assert_eq!(back[0].1[0].count, s[0].count);
        assert!(decode_buckets(buckets[0].0, hour, &bytes[..10]).is_err());
    }
}
