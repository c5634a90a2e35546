//! "You enjoy tennis": on a probe turn ("What is your favorite hobby?") the reply names
//! the hobby or one of its catalog keywords ("racket"), as whole words, ignoring case and
//! accents. When the instruction also asks for a language, the catalog's keywords in that
//! language count too ("la robotica" for Robotics in Italian): a reply that keeps both
//! constraints names the hobby in the instructed language.

use super::{text, Check};
use gatt::catalog::{Hobby, Language};

/// `language`: the language the dialogue's instruction asks for, if any.
pub fn check(hobby: &Hobby, language: Option<&Language>, reply: &str) -> Check {
    let words = text::words(reply);
    let english = std::iter::once(&hobby.name).chain(&hobby.keywords);
    let keywords = text::Keywords::of(english, language, &hobby.translated_keywords);
    if let Some(word) = keywords.find(&words) {
        return Check::pass(format!("mentions \"{word}\""));
    }
    Check::fail(format!(
        "mentions neither {} nor any of its keywords ({})",
        hobby.name,
        keywords.looked_in(&words)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    fn robotics() -> Hobby {
        Hobby {
            name: "Robotics".into(),
            keywords: vec!["robotics".into(), "robot".into()],
            translated_keywords: [("ita".to_string(), vec!["robotica".to_string()])].into(),
        }
    }

    fn language(name: &str, code: &str) -> Language {
        Language {
            name: name.into(),
            code: code.into(),
            native: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn name_or_keyword_as_whole_words() {
        let h = Hobby {
            name: "Rock climbing".into(),
            keywords: vec!["climb".into(), "boulder".into()],
            translated_keywords: Default::default(),
        };
        assert_eq!(
            check(&h, None, "ROCK CLIMBING, always.").verdict,
            Verdict::Pass
        );
        assert_eq!(
            check(&h, None, "I climb on weekends.").verdict,
            Verdict::Pass
        );
        assert_eq!(
            check(&h, None, "I love climbers and boulders.").verdict,
            Verdict::Fail
        );
    }

    /// "camera" is Italian for "room": in a reply that should be Italian it does not name
    /// Photography, and the evidence says why; the Italian keyword still counts, and in
    /// an English dialogue the English keyword does.
    #[test]
    fn english_keywords_that_are_words_of_the_instructed_language_do_not_count() {
        let photography = Hobby {
            name: "Photography".into(),
            keywords: vec!["camera".into(), "photo".into()],
            translated_keywords: [("ita".to_string(), vec!["fotografia".to_string()])].into(),
        };
        let italian = Language {
            false_friends: vec!["Camera".into(), "serve".into()],
            ..language("Italian", "ita")
        };
        let room = "La mia camera è piccola, ma serve.";
        let k = check(&photography, Some(&italian), room);
        assert_eq!(k.verdict, Verdict::Fail, "{}", k.evidence);
        assert!(
            k.evidence.ends_with(
                "(English or Italian; \"camera\" not counted: an ordinary Italian word)"
            ),
            "{}",
            k.evidence
        );
        let k = check(&photography, Some(&italian), "Amo la fotografia.");
        assert_eq!(k.verdict, Verdict::Pass);
        assert_eq!(check(&photography, None, room).verdict, Verdict::Pass);
        let english = language("English", "eng");
        assert_eq!(
            check(&photography, Some(&english), room).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn keywords_in_the_instructed_language_count() {
        let italian = language("Italian", "ita");
        let reply = "Mi piace la robòtica.";
        assert_eq!(
            check(&robotics(), Some(&italian), reply).verdict,
            Verdict::Pass
        );
        // Without the language constraint the Italian word is not looked for.
        let k = check(&robotics(), None, reply);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.evidence.ends_with("(English)"), "{}", k.evidence);
        // English keywords still count in an Italian dialogue.
        let k = check(&robotics(), Some(&italian), "Robots!");
        assert_eq!(k.verdict, Verdict::Fail, "whole words only: {}", k.evidence);
        let k = check(&robotics(), Some(&italian), "Un robot.");
        assert_eq!(k.verdict, Verdict::Pass);
    }

    #[test]
    fn a_language_without_keywords_says_so() {
        let french = language("French", "fra");
        let k = check(&robotics(), Some(&french), "J'aime la robotique.");
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(
            k.evidence
                .contains("English only: the catalog has none in French"),
            "{}",
            k.evidence
        );
    }
}
