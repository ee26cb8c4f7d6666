//! Target 3: signed cookie verification and pending-login cookie parsing
//! on arbitrary input. Nothing may panic, and nothing but a value this key
//! signed may verify.
#![no_main]

use auth::{CookieKey, CookieKeys};
use edge_core::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = CookieKeys::new(
        CookieKey::new(Secret::new("k".repeat(32))).expect("a 32-byte key"),
        vec![],
    );
    let now = 1_700_000_000_000;
    if let Ok(value) = keys.verify("edge_session", "session", text, now) {
        panic!("an unsigned value verified: {value:?}");
    }
    let _ = auth::pending::PendingLogin::decode(text);
    // A value we signed round-trips, whatever it is (URL-safe values only).
    if !text.contains('.') && !text.is_empty() {
        let signed = keys.sign("edge_session", "session", text, now + 60_000);
        assert_eq!(
            keys.verify("edge_session", "session", &signed, now)
                .ok()
                .as_deref(),
            Some(text)
        );
    }
});
