//! Target 4: pairing-code normalisation and the exchange request body on
//! arbitrary input. Nothing may panic; a normalised code normalises to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(code) = api_server::pairing::normalize(text) {
            assert_eq!(
                api_server::pairing::normalize(&code).as_deref(),
                Some(code.as_str())
            );
        }
    }
    let _ = serde_json::from_slice::<api_server::pairing::ExchangeRequest>(data);
});
