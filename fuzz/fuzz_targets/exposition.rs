//! Target 7: a box's telemetry on arbitrary bytes. The exposition parser
//! (with the contract's limits), the figures of two scrapes of the same
//! body (rates against the first), and the decoders of stored windows and
//! rollups must never panic; whatever parses stays within the limits, and
//! every figure it yields is finite; a window or a rollup that decodes
//! re-encodes to bytes that decode to the same window or rollup.
#![no_main]

use box_metrics::codec;
use box_metrics::{AllowList, Limits, Tracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(e) = box_metrics::parse(data, &limits) {
        assert!(e.samples.len() <= limits.max_samples);
        for s in &e.samples {
            assert!(s.labels.len() <= limits.max_labels);
            for (_, v) in &s.labels {
                assert!(v.chars().count() <= limits.max_label_value_chars);
                assert!(!v.chars().any(char::is_control));
            }
        }
        let allow = AllowList::parse("x_*,y");
        let mut t = Tracker::default();
        for at in [0, 15_000] {
            if let Ok(f) = t.figures(&e, at, &allow) {
                assert!(f.values.iter().all(|(_, v)| v.is_finite()));
            }
        }
    }
    if let Ok(w) = codec::decode(0, data) {
        let again = codec::decode(0, &codec::encode(&w)).expect("re-encoded window decodes");
        assert_eq!(again, w);
    }
    if let Ok(b) = codec::decode_buckets(0, 300_000, data) {
        let bytes = codec::encode_buckets(0, 300_000, &b);
        let again = codec::decode_buckets(0, 300_000, &bytes).expect("re-encoded rollup decodes");
        assert_eq!(again, b);
    }
});
