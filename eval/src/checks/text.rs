//! Text helpers the checks share: separating prose from code, and matching names and
//! words the way a reader would (case, accents and punctuation do not matter).

use gatt::catalog::Language;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The prose of a reply: fenced code blocks (```` ``` ```` or `~~~`) and inline `` `code` ``
/// removed.
///
/// Code is an artefact the user asked for, not prose written under the instruction: an
/// answer in French may quote an English identifier, a lowercase answer may name `Vec`.
/// An unclosed fence hides the rest of the reply, as a Markdown renderer would.
pub fn strip_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fence: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        let start = line.trim_start();
        match fence {
            Some(marker) => {
                if start.starts_with(marker) {
                    fence = None;
                }
            }
            None => {
                if let Some(marker) = ["```", "~~~"].into_iter().find(|m| start.starts_with(m)) {
                    fence = Some(marker);
                } else {
                    strip_inline_code(line, &mut out);
                }
            }
        }
    }
    out
}

/// Appends `line` to `out` with each `` `span` `` replaced by a space; a lone backtick
/// is kept as it is.
fn strip_inline_code(line: &str, out: &mut String) {
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        match after.find('`') {
            Some(close) => {
                out.push_str(&rest[..open]);
                out.push(' ');
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
}

/// The phrases a hobby or persona check looks for in a reply, and the evidence of a
/// miss: [`Keywords::of`].
pub struct Keywords<'a> {
    /// The entry's English name and keywords that count, then its keywords in the
    /// instructed language.
    pub looked_for: Vec<&'a String>,
    /// English phrases left out because they are ordinary words of the instructed
    /// language ([`Language::false_friends`]).
    pub left_out: Vec<&'a String>,
    language: Option<&'a Language>,
    translated: bool,
}

impl<'a> Keywords<'a> {
    /// `english`: the entry's name and keywords; `language`: the language the
    /// instruction asks for, if any; `translated`: the entry's keywords keyed by
    /// language code (`translated_keywords`).
    pub fn of(
        english: impl IntoIterator<Item = &'a String>,
        language: Option<&'a Language>,
        translated: &'a std::collections::BTreeMap<String, Vec<String>>,
    ) -> Self {
        let false_friends: Vec<String> = language
            .map(|l| l.false_friends.iter().map(|w| fold(w)).collect())
            .unwrap_or_default();
        let (looked_for, left_out): (Vec<&String>, Vec<&String>) = english
            .into_iter()
            .partition(|p| !false_friends.contains(&fold(p)));
        let translated = language.and_then(|l| translated.get(&l.code));
        Keywords {
            looked_for: looked_for
                .into_iter()
                .chain(translated.into_iter().flatten())
                .collect(),
            left_out,
            language,
            translated: translated.is_some(),
        }
    }

    /// The first phrase found in `words` (the output of [`words`]).
    pub fn find(&self, words: &[String]) -> Option<&'a String> {
        first_phrase(words, self.looked_for.iter().copied())
    }

    /// Which keywords were looked for, for a miss's evidence: "English", "English or
    /// Italian", "English only: the catalog has none in Japanese", followed by the
    /// English keywords the reply holds that were left out as ordinary words of the
    /// language ("; \"camera\" not counted: an ordinary Italian word").
    pub fn looked_in(&self, words: &[String]) -> String {
        let mut out = match (self.language, self.translated) {
            (Some(l), true) => format!("English or {}", l.name),
            (Some(l), false) => format!("English only: the catalog has none in {}", l.name),
            (None, _) => "English".to_string(),
        };
        let held: Vec<String> = self
            .left_out
            .iter()
            .filter(|p| contains_phrase(words, p))
            .map(|p| format!("\"{p}\""))
            .collect();
        if let (Some(l), false) = (self.language, held.is_empty()) {
            let what = match held.len() {
                1 => format!("an ordinary {} word", l.name),
                _ => format!("ordinary {} words", l.name),
            };
            out.push_str(&format!("; {} not counted: {what}", held.join(", ")));
        }
        out
    }
}

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

/// Number of letters (any script).
pub fn letter_count(text: &str) -> usize {
    text.chars().filter(|c| c.is_alphabetic()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fenced_and_inline_code() {
        let text = "Voici:\n```rust\nfn main() {}\n```\nUtilisez `cargo run` ici.\n";
        assert_eq!(strip_code(text), "Voici:\nUtilisez   ici.\n");
    }

    #[test]
    fn unclosed_fence_hides_the_rest_and_lone_backtick_stays() {
        assert_eq!(strip_code("a\n```\ncode\nmore"), "a\n");
        assert_eq!(strip_code("it`s fine"), "it`s fine");
    }

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
