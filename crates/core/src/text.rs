//! Display-safe text: strings that users and boxes supply (names, labels,
//! models, a provider's `name` claim) lose control characters and Unicode
//! bidirectional overrides before they are stored, so a crafted name cannot
//! reorder or hide what the console shows around it; and escaping for the
//! few pages the servers render themselves.

/// Bidirectional formatting characters (Trojan Source, CVE-2021-42574):
/// ALM, LRM, RLM, the embeddings and overrides, and the isolates.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// `s` without control characters (C0, DEL, C1) and bidi controls, with
/// surrounding whitespace trimmed.
pub fn display_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// [`display_safe`], then at most `max` characters.
pub fn display_safe_bounded(s: &str, max: usize) -> String {
    display_safe(s).chars().take(max).collect()
}

/// `s` escaped for HTML text and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_removed() {
        assert_eq!(
            display_safe(" Lab\u{202E}kcab\u{2066} box\u{0007}\n"),
            "Labkcab box"
        );
        assert_eq!(display_safe("a\u{200F}b\u{061C}c\u{009B}d\u{007F}"), "abcd");
        assert_eq!(display_safe("Zoë 東京 🙂"), "Zoë 東京 🙂");
        assert_eq!(display_safe_bounded("abcdef", 3), "abc");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
