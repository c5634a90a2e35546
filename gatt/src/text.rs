//! Words as a reader compares them: case, accents and punctuation do not matter
//! ("Napoléon" = "NAPOLEON", "role-playing" = "role playing"). The evaluator's checks
//! (names, keywords) and the synthesis gate's phrase lists match text through these.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Lowercase without diacritics: "Napoléon" and "NAPOLEON" both become "napoleon".
/// Ligatures and the sharp s, which have no decomposition, are spelled out as writers
/// without them spell them: "cœur" and "coeur" both become "coeur", "Straße" "strasse".
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfd().filter(|c| !is_combining_mark(*c)) {
        for c in c.to_lowercase() {
            match c {
                'œ' => out.push_str("oe"),
                'æ' => out.push_str("ae"),
                'ß' => out.push_str("ss"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Scripts written without spaces between words: each character is its own word, so
/// that a name in Chinese or Japanese can still be found.
pub fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x2FFFF) // CJK extensions B and later
}

/// The folded words of a text: runs of letters and digits. Everything else (spaces,
/// punctuation, apostrophes, hyphens) separates words, so "role-playing" is two words and
/// "J.R.R. Tolkien" reads like "J. R. R. Tolkien".
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in fold(text).chars() {
        if is_unspaced(c) {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            words.push(c.to_string());
        } else if c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// True when `phrase` occurs in `haystack` (the output of [`words`]) as whole words.
/// A phrase without any letter or digit never matches.
pub fn contains_phrase(haystack: &[String], phrase: &str) -> bool {
    let needle = words(phrase);
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_slice())
}

/// The first of `phrases` found in `haystack` as whole words.
pub fn first_phrase<'a>(
    haystack: &[String],
    phrases: impl IntoIterator<Item = &'a String>,
) -> Option<&'a String> {
    phrases.into_iter().find(|p| contains_phrase(haystack, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_removes_case_and_accents() {
        assert_eq!(fold("Napoléon ÉDITH Comăneci"), "napoleon edith comaneci");
        assert_eq!(
            fold("Cœur ŒUVRE Æther Straße"),
            "coeur oeuvre aether strasse"
        );
    }

    #[test]
    fn words_split_on_punctuation_and_unspaced_scripts() {
        assert_eq!(words("J.R.R. Tolkien's"), ["j", "r", "r", "tolkien", "s"]);
        assert_eq!(words("我是孔子"), ["我", "是", "孔", "子"]);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let hay = words("I am Frida Kahlo, a painter. Napoleonic wars.");
        assert!(contains_phrase(&hay, "frida kahlo"));
        assert!(contains_phrase(&hay, "Kahlo"));
        assert!(!contains_phrase(&hay, "Napoleon"));
        assert!(!contains_phrase(&hay, "paint"));
        assert!(!contains_phrase(&hay, "..."));
    }
}
