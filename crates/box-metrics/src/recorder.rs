//! The open window as the relay fills it: [`Recorder`] keeps each scrape
//! already in the packed form [`codec::encode`] writes (about a byte a
//! sample instead of a [`codec::Window`]'s sixteen), and each closed
//! five-minute bucket's rollups in the packed form
//! [`codec::encode_buckets`] writes, with only the open bucket's values
//! kept raw. Writing the window or its rollups is then a copy, not a pass
//! over the hour; the bytes are exactly those of [`codec::encode`] and
//! [`codec::encode_buckets`] over the same scrapes.

use crate::codec::{self, put_bucket, put_varint, scale, zigzag, CONSTANT, DENSE, VERSION};
use std::collections::BTreeMap;

/// One series as recorded so far.
#[derive(Debug, Clone)]
struct Column {
    exp: i8,
    /// Presence per scrape (bit `i` of byte `i / 8`), as long as needed.
    present: Vec<u8>,
    count: usize,
    /// The scrape index of the last value, to take one value per scrape.
    last_index: usize,
    first: i64,
    last: i64,
    constant: bool,
    /// The values as delta zig-zag varints from 0 (the non-constant form).
    deltas: Vec<u8>,
    /// The open bucket's values.
    bucket: Vec<f64>,
    /// The closed buckets' rollups, packed.
    rollups: Vec<u8>,
    /// The last closed bucket's min, at the resolution (the packing's base).
    last_min: i64,
}

/// A window being filled, one scrape at a time.
#[derive(Debug, Clone)]
pub struct Recorder {
    bucket_ms: i64,
    n: usize,
    first_ms: i64,
    last_ms: i64,
    prev_delta: i64,
    times: Vec<u8>,
    series: BTreeMap<u32, Column>,
    /// The start of the open bucket, once a scrape is in.
    open: Option<i64>,
    /// The closed buckets' starts.
    closed: Vec<i64>,
}

impl Recorder {
    /// An empty window whose rollups are buckets of `bucket_ms`.
    pub fn new(bucket_ms: i64) -> Self {
        Self {
            bucket_ms: bucket_ms.max(1),
            n: 0,
            first_ms: 0,
            last_ms: 0,
            prev_delta: 0,
            times: Vec::new(),
            series: BTreeMap::new(),
            open: None,
            closed: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The first and the last scrape's times (ms).
    pub fn span(&self) -> (i64, i64) {
        (self.first_ms, self.last_ms)
    }

    /// Add one scrape, as [`codec::Window::push`] does; `false` (and
    /// nothing added) when the window is full.
    pub fn push(&mut self, at_ms: i64, values: &[(u32, i8, f64)]) -> bool {
        let n = self.n;
        if n >= codec::MAX_SAMPLES {
            return false;
        }
        if n == 0 {
            self.first_ms = at_ms;
        } else {
            let delta = at_ms.saturating_sub(self.last_ms);
            put_varint(
                &mut self.times,
                zigzag(delta.saturating_sub(self.prev_delta)),
            );
            self.prev_delta = delta;
        }
        self.last_ms = at_ms;
        self.n = n + 1;
        match self.open {
            Some(start) if at_ms < start + self.bucket_ms => {}
            Some(_) => {
                self.close_bucket();
                self.open = Some(at_ms - at_ms.rem_euclid(self.bucket_ms));
            }
            None => self.open = Some(at_ms - at_ms.rem_euclid(self.bucket_ms)),
        }
        for (id, exp, v) in values {
            if self.series.len() >= codec::MAX_SERIES && !self.series.contains_key(id) {
                continue;
            }
            let col = self.series.entry(*id).or_insert_with(|| Column {
                exp: *exp,
                present: Vec::new(),
                count: 0,
                last_index: 0,
                first: 0,
                last: 0,
                constant: true,
                deltas: Vec::new(),
                bucket: Vec::new(),
                // "No value" for each bucket closed before it came.
                rollups: vec![0; self.closed.len()],
                last_min: 0,
            });
            if col.count > 0 && col.last_index == n {
                continue;
            }
            let x = scale(*v, col.exp);
            if col.present.len() <= n / 8 {
                col.present.resize(n / 8 + 1, 0);
            }
            col.present[n / 8] |= 1 << (n % 8);
            if col.count == 0 {
                col.first = x;
            } else if x != col.last {
                col.constant = false;
            }
            put_varint(&mut col.deltas, zigzag(x.wrapping_sub(col.last)));
            col.last = x;
            col.count += 1;
            col.last_index = n;
            col.bucket.push(*v);
        }
        true
    }

    /// Pack the open bucket's rollups into each series' and empty it.
    fn close_bucket(&mut self) {
        let Some(start) = self.open else {
            return;
        };
        for (id, col) in &mut self.series {
            let sum = codec::summarize(*id, col.exp, &mut col.bucket);
            put_bucket(&mut col.rollups, sum.as_ref(), col.exp, &mut col.last_min);
            col.bucket.clear();
        }
        self.closed.push(start);
    }

    /// The bytes of [`codec::encode`] for the scrapes pushed so far.
    pub fn encode(&self) -> Vec<u8> {
        let bitmap = self.n.div_ceil(8);
        let mut out = Vec::with_capacity(
            16 + self.times.len()
                + self
                    .series
                    .values()
                    .map(|c| 8 + bitmap + c.deltas.len())
                    .sum::<usize>(),
        );
        out.push(VERSION);
        put_varint(&mut out, self.n as u64);
        out.extend_from_slice(&self.times);
        put_varint(&mut out, self.series.len() as u64);
        for (id, col) in &self.series {
            out.extend_from_slice(&id.to_le_bytes());
            out.push(col.exp as u8);
            let dense = col.count == self.n;
            out.push(if dense { DENSE } else { 0 } | if col.constant { CONSTANT } else { 0 });
            if !dense {
                out.extend_from_slice(&col.present);
                out.resize(out.len() + bitmap - col.present.len(), 0);
            }
            if col.constant {
                put_varint(&mut out, zigzag(col.first));
            } else {
                out.extend_from_slice(&col.deltas);
            }
        }
        out
    }

    /// The bytes of [`codec::encode_buckets`] for this window's buckets
    /// (the open one included), relative to `base_ms`.
    pub fn encode_rollups(&self, base_ms: i64) -> Vec<u8> {
        let buckets = self.closed.len() + usize::from(self.open.is_some());
        let mut out = Vec::with_capacity(
            8 + buckets
                + self
                    .series
                    .values()
                    .map(|c| 16 + c.rollups.len())
                    .sum::<usize>(),
        );
        out.push(VERSION);
        put_varint(&mut out, buckets as u64);
        for start in self.closed.iter().chain(&self.open) {
            put_varint(&mut out, ((start - base_ms) / self.bucket_ms).max(0) as u64);
        }
        put_varint(&mut out, self.series.len() as u64);
        let mut scratch = Vec::new();
        for (id, col) in &self.series {
            out.extend_from_slice(&id.to_le_bytes());
            out.push(col.exp as u8);
            out.extend_from_slice(&col.rollups);
            if self.open.is_some() {
                scratch.clear();
                scratch.extend_from_slice(&col.bucket);
                let sum = codec::summarize(*id, col.exp, &mut scratch);
                put_bucket(&mut out, sum.as_ref(), col.exp, &mut col.last_min.clone());
            }
        }
        out
    }

    /// Bytes held (an estimate of the heap this window uses).
    pub fn heap_bytes(&self) -> usize {
        self.times.capacity()
            + self.closed.capacity() * 8
            + self
                .series
                .values()
                .map(|c| {
                    std::mem::size_of::<Column>()
                        + 16
                        + c.present.capacity()
                        + c.deltas.capacity()
                        + c.rollups.capacity()
                        + c.bucket.capacity() * 8
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::{encode, encode_buckets, summarize_buckets, Window};

    /// A deterministic generator (xorshift) so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random scrapes: series that come and go, repeat within a scrape,
    /// change resolution, stay constant; times that jitter, stall and step
    /// back; the same scrapes into a `Window` and a `Recorder` give the
    /// same bytes, for the window and for its rollups.
    #[test]
    fn a_recorder_writes_what_the_codec_writes_for_the_same_scrapes() {
        for seed in 1..200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bucket_ms = 300_000;
            let mut w = Window::default();
            let mut r = Recorder::new(bucket_ms);
            let mut t = 1_700_000_000_000i64 + rng.below(600_000) as i64;
            let scrapes = 1 + rng.below(300) as usize;
            for _ in 0..scrapes {
                t += match rng.below(10) {
                    0 => -(rng.below(20_000) as i64),
                    1 => 0,
                    2 => rng.below(900_000) as i64,
                    _ => 15_000 + rng.below(200) as i64,
                };
                let mut values = Vec::new();
                for id in 0..(1 + rng.below(12) as u32) {
                    if rng.below(4) == 0 {
                        continue;
                    }
                    let exp = [-2i8, 0, -4][rng.below(3) as usize];
                    let v = match id % 3 {
                        0 => 42.0,
                        1 => rng.below(10_000) as f64 / 7.0,
                        _ => -(rng.below(1_000_000) as f64),
                    };
                    values.push((id, exp, v));
                    if rng.below(8) == 0 {
                        values.push((id, exp, v + 1.0));
                    }
                }
                assert_eq!(w.push(t, &values), r.push(t, &values));
            }
            assert_eq!(r.len(), w.len());
            assert_eq!(r.encode(), encode(&w), "seed {seed}");
            let base = w.times[0] - w.times[0].rem_euclid(3_600_000);
            assert_eq!(
                r.encode_rollups(base),
                encode_buckets(base, bucket_ms, &summarize_buckets(&w, bucket_ms)),
                "seed {seed}"
            );
            // Writing the rollups leaves the recorder as it was.
            assert_eq!(
                r.encode_rollups(base),
                encode_buckets(base, bucket_ms, &summarize_buckets(&w, bucket_ms))
            );
        }
    }

    #[test]
    fn a_full_recorder_refuses_more_like_a_window() {
        let mut r = Recorder::new(300_000);
        for i in 0..codec::MAX_SAMPLES as i64 {
            assert!(r.push(i, &[(1, 0, i as f64)]));
        }
        assert!(!r.push(1 << 40, &[(1, 0, 0.0)]));
        assert_eq!(r.len(), codec::MAX_SAMPLES);
    }

    /// An hour of a sim-box-sized scrape (40 series at 15 s) held in a
    /// third of what the decoded window needs.
    #[test]
    fn an_hour_is_held_in_a_few_bytes_a_sample() {
        let mut r = Recorder::new(300_000);
        for i in 0..240i64 {
            let values: Vec<(u32, i8, f64)> = (0..40u32)
                .map(|id| (id, -2, 20.0 + ((i * 7 + i64::from(id)) % 13) as f64 / 4.0))
                .collect();
            assert!(r.push(1_700_000_000_000 + i * 15_000, &values));
        }
        let decoded = 240 * 40 * std::mem::size_of::<Option<f64>>();
        assert!(
            r.heap_bytes() * 3 < decoded,
            "{} bytes held against {decoded}",
            r.heap_bytes()
        );
    }
}
