//! Text the suite prints back (names, labels read from files) must not drive the terminal or
//! hide what it says: no control characters (escape sequences start with one), and no Unicode
//! format characters (bidirectional overrides, zero-width spaces), which reorder or hide text.

/// The first character of `text` that would not print as itself, if any.
pub fn unprintable_char(text: &str) -> Option<char> {
    text.chars().find(|&c| c.is_control() || is_format_char(c))
}

/// Unicode's invisible and direction-changing characters (general category Cf in the ranges
/// that matter for display).
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::unprintable_char;

    #[test]
    fn control_bidi_and_zero_width_characters_are_found() {
        assert_eq!(unprintable_char("digits main table, 5-9"), None);
        assert_eq!(unprintable_char("ünïcode ✓"), None);
        assert_eq!(unprintable_char("a\u{1b}[31mred"), Some('\u{1b}'));
        assert_eq!(unprintable_char("abc\u{202E}fed"), Some('\u{202E}'));
        assert_eq!(unprintable_char("zero\u{200B}width"), Some('\u{200B}'));
        assert_eq!(unprintable_char("tab\there"), Some('\t'));
    }
}
