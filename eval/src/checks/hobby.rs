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
    let translated = language.and_then(|l| hobby.translated_keywords.get(&l.code));
    let phrases = std::iter::once(&hobby.name)
        .chain(&hobby.keywords)
        .chain(translated.into_iter().flatten());
    if let Some(word) = text::first_phrase(&words, phrases) {
        return Check::pass(format!("mentions \"{word}\""));
    }
    Check::fail(format!(
        "mentions neither {} nor any of its keywords ({})",
        hobby.name,
        text::looked_in(language, translated.is_some())
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
