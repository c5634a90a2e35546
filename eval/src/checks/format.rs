//! Format rules (`templates/catalogs/formats.json`), each checkable by code.
//!
//! All but `haiku` are verifiable instructions of IFEval (Zhou et al. 2023: lowercase,
//! capital letters, sentence and word counts, no commas, an end phrase, a keyword, JSON
//! format); the checks here are this crate's own, with the leniencies documented on each
//! (code ignored for case and sentences, quotes and case ignored for the end phrase).
//!
//! Rules about how prose looks (case, sentences) ignore code blocks; rules about the
//! whole reply (length, commas, a required word, the closing phrase, haiku and JSON
//! shape) read all of it, code included, because the user sees all of it.

use super::{problem, sentences, text, Check, Undecided};

/// Checks rule `id` with its argument `param` (for `max_words`, `ends_with`, `include_word`).
pub fn check(id: &str, param: Option<&str>, reply: &str) -> Check {
    match (id, param) {
        ("lowercase", _) => case(reply, Case::Lower),
        ("uppercase", _) => case(reply, Case::Upper),
        ("one_sentence", _) => one_sentence(reply),
        ("no_commas", _) => no_commas(reply),
        ("haiku", _) => haiku(reply),
        ("json", _) => json(reply),
        ("max_words", Some(n)) => match n.trim().parse::<usize>() {
            Ok(n) => max_words(reply, n),
            Err(_) => problem(format!("format rule `max_words` needs a number, got `{n}`")),
        },
        ("ends_with", Some(phrase)) => ends_with(reply, phrase),
        ("include_word", Some(word)) => include_word(reply, word),
        ("max_words" | "ends_with" | "include_word", None) => {
            problem(format!("format rule `{id}` needs a parameter"))
        }
        _ => problem(format!("no check exists for format rule `{id}`")),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Lower,
    Upper,
}

/// No uppercase (or lowercase) letter in the prose. Prose without any cased letter (a
/// number, a reply in Chinese) gives nothing to judge.
fn case(reply: &str, want: Case) -> Check {
    let (is_wrong, wrong): (fn(char) -> bool, &str) = match want {
        Case::Lower => (char::is_uppercase, "uppercase"),
        Case::Upper => (char::is_lowercase, "lowercase"),
    };
    let prose = text::strip_code(reply);
    if let Some(word) = prose.split_whitespace().find(|w| w.chars().any(is_wrong)) {
        return Check::fail(format!("{wrong} letter in `{word}`"));
    }
    if prose.chars().any(|c| c.is_lowercase() || c.is_uppercase()) {
        Check::pass("no letter of the wrong case")
    } else {
        Check::undetermined(Undecided::Unclear, "no cased letters in the prose")
    }
}

fn one_sentence(reply: &str) -> Check {
    match sentences::count(&text::strip_code(reply)) {
        0 => Check::undetermined(Undecided::Unclear, "no prose outside code"),
        1 => Check::pass("1 sentence"),
        n => Check::fail(format!("{n} sentences")),
    }
}

/// Words are whitespace-separated tokens holding a letter or digit; in scripts written
/// without spaces every character counts as a word.
fn max_words(reply: &str, n: usize) -> Check {
    let count = word_count(reply);
    let evidence = format!("{count} words, limit {n}");
    if count <= n {
        Check::pass(evidence)
    } else {
        Check::fail(evidence)
    }
}

fn word_count(reply: &str) -> usize {
    reply
        .split_whitespace()
        .map(|token| {
            let unspaced = token.chars().filter(|c| text::is_unspaced(*c)).count();
            let spaced = token
                .chars()
                .any(|c| c.is_alphanumeric() && !text::is_unspaced(c));
            unspaced + usize::from(spaced)
        })
        .sum()
}

/// Quotes and Markdown emphasis are left out of the comparison: `... "Stay curious."`,
/// `... **Stay curious.**` and `... Stay curious.` all end with the phrase. Case does not
/// matter either.
fn ends_with(reply: &str, phrase: &str) -> Check {
    let (reply, phrase) = (comparable(reply), comparable(phrase));
    if phrase.is_empty() {
        return problem("format rule `ends_with` has an empty phrase");
    }
    if reply.ends_with(&phrase) {
        return Check::pass(format!("ends with \"{phrase}\""));
    }
    let tail_start = reply.char_indices().rev().nth(39).map_or(0, |(i, _)| i);
    Check::fail(format!(
        "ends with \"{}\", not \"{phrase}\"",
        &reply[tail_start..]
    ))
}

/// Lowercase, trimmed, without quotes or emphasis marks.
fn comparable(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| {
            !matches!(
                c,
                '"' | '\'' | '“' | '”' | '‘' | '’' | '«' | '»' | '`' | '*'
            )
        })
        .collect();
    kept.trim().to_lowercase()
}

fn include_word(reply: &str, word: &str) -> Check {
    if text::words(word).is_empty() {
        return problem(format!(
            "format rule `include_word` has no word in `{word}`"
        ));
    }
    if text::contains_phrase(&text::words(reply), word) {
        Check::pass(format!("contains \"{word}\""))
    } else {
        Check::fail(format!("does not contain the word \"{word}\""))
    }
}

/// ASCII, fullwidth and Arabic commas and the ideographic enumeration comma.
fn no_commas(reply: &str) -> Check {
    match reply.matches([',', '，', '،', '、']).count() {
        0 => Check::pass("no commas"),
        1 => Check::fail("1 comma"),
        n => Check::fail(format!("{n} commas")),
    }
}

/// Three non-empty lines; syllables are not counted (no reliable syllable counter exists
/// across languages, and the paper's unseen-constraint test is about the shape).
fn haiku(reply: &str) -> Check {
    let lines = reply.lines().filter(|l| !l.trim().is_empty()).count();
    if lines == 3 {
        Check::pass("3 lines")
    } else {
        Check::fail(format!("{lines} non-empty lines, a haiku has 3"))
    }
}

/// The whole reply parses as JSON, bare or inside one fenced block (```` ```json ````).
fn json(reply: &str) -> Check {
    let body = unfence(reply.trim());
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(_) => Check::pass("valid JSON"),
        Err(e) => Check::fail(format!("not valid JSON: {e}")),
    }
}

/// The content of a reply that is exactly one fenced code block; otherwise the reply.
fn unfence(reply: &str) -> &str {
    for marker in ["```", "~~~"] {
        let Some(inner) = reply
            .strip_prefix(marker)
            .and_then(|r| r.strip_suffix(marker))
        else {
            continue;
        };
        // Drop the info string ("json") on the opening line.
        return match inner.split_once('\n') {
            Some((info, body)) if !info.contains(['{', '[']) => body,
            _ => inner,
        };
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    fn v(id: &str, param: Option<&str>, reply: &str) -> Verdict {
        check(id, param, reply).verdict
    }

    #[test]
    fn case_rules_ignore_code() {
        assert_eq!(
            v("lowercase", None, "use `Vec::new()` here."),
            Verdict::Pass
        );
        assert_eq!(v("lowercase", None, "Hello there."), Verdict::Fail);
        assert_eq!(v("uppercase", None, "HELLO, WORLD!"), Verdict::Pass);
        assert_eq!(v("uppercase", None, "42"), Verdict::Undetermined);
    }

    #[test]
    fn word_counts() {
        assert_eq!(word_count("one two — three"), 3);
        assert_eq!(word_count("我喜欢 tennis"), 4);
        assert_eq!(
            v("max_words", Some("3"), "one two three four"),
            Verdict::Fail
        );
    }

    #[test]
    fn ends_with_tolerates_quotes_and_case() {
        let r = "Blue light scatters most. \"Stay curious.\"\n";
        assert_eq!(v("ends_with", Some("Stay curious."), r), Verdict::Pass);
        assert_eq!(
            v("ends_with", Some("Stay curious."), "stay curious"),
            Verdict::Fail
        );
    }

    #[test]
    fn json_bare_or_fenced() {
        assert_eq!(v("json", None, "{\"a\": 1}"), Verdict::Pass);
        assert_eq!(
            v("json", None, "```json\n{\"a\": [1, 2]}\n```\n"),
            Verdict::Pass
        );
        assert_eq!(v("json", None, "```{\"a\": 1}```"), Verdict::Pass);
        assert_eq!(v("json", None, "Here: {\"a\": 1}"), Verdict::Fail);
    }

    #[test]
    fn missing_or_bad_parameters_are_problems() {
        assert!(check("max_words", Some("many"), "x").is_problem());
        assert!(check("include_word", None, "x").is_problem());
        assert!(check("rhyme", None, "x").is_problem());
    }
}
