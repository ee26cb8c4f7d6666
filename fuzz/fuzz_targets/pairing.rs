//! Target 4: pairing-code normalisation on arbitrary input. Nothing may
//! panic; a normalised code normalises to itself. (The exchange body around
//! the code is a derived serde struct of strings; the HTTP tests cover its
//! rejections.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(code) = edge_core::pairing_code::normalize(text) {
            assert_eq!(
                edge_core::pairing_code::normalize(&code).as_deref(),
                Some(code.as_str())
            );
        }
    }
});
