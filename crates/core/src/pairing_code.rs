//! Pairing codes, the one-time credential a box exchanges for its device
//! credential: 10 Crockford base32 characters (50 bits), shown
//! `XXXXX-XXXXX`, typed case-insensitively with dashes and spaces ignored
//! and look-alike letters forgiven. Generating and normalising them lives
//! here, apart from the api-server's routes, so the `pairing` fuzz target
//! drives it without the server.

use rand::Rng;

/// Crockford base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 10;

/// A fresh code as shown to the user: `XXXXX-XXXXX`.
pub fn new_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let raw: String = (0..CODE_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    format!("{}-{}", &raw[..5], &raw[5..])
}

/// Canonical form of a typed code: uppercase, dashes and spaces dropped,
/// Crockford's look-alikes mapped (I/L → 1, O → 0); `None` if malformed.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c if ALPHABET.contains(&(c as u8)) && c.is_ascii() => c,
            _ => return None,
        };
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_fifty_bits_in_the_display_format() {
        let c = new_code();
        assert_eq!(c.len(), 11);
        assert_eq!(&c[5..6], "-");
        assert_ne!(new_code(), c);
        assert_eq!(normalize(&c).map(|n| n.len()), Some(10));
    }

    #[test]
    fn typing_is_forgiving_but_not_sloppy() {
        assert_eq!(normalize("abcde-fghjk").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalize(" 0O1IL-23456 ").as_deref(), Some("0011123456"));
        assert_eq!(normalize("ABCDEFGHJ"), None, "too short");
        assert_eq!(normalize("ABCDE-FGHJKU"), None, "U is not in the alphabet");
        assert_eq!(normalize("ÄBCDE-FGHJK"), None);
    }
}
