//! Text helpers the checks share: separating prose from code, and matching names and
//! words the way a reader would (case, accents and punctuation do not matter).

use gatt::catalog::Language;
pub use gatt::text::{contains_phrase, first_phrase, fold, is_unspaced, words};

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
        // Compared as words: "Role-playing" is the false friend "role playing".
        let false_friends: Vec<Vec<String>> = language
            .map(|l| l.false_friends.iter().map(|w| words(w)).collect())
            .unwrap_or_default();
        let (looked_for, left_out): (Vec<&String>, Vec<&String>) = english
            .into_iter()
            .partition(|p| !false_friends.contains(&words(p)));
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
}
