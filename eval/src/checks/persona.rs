//! "You are a gruff pirate captain": on a probe turn ("What do you do for a living?")
//! the reply uses one of the persona's catalog keywords ("ahoy", "treasure") or its name,
//! as whole words, ignoring case and accents; in a dialogue whose instruction asks for a
//! language, the catalog's keywords in that language count too ("trésor").

use super::{text, Check};
use gatt::catalog::{Language, Persona};

/// `language`: the language the dialogue's instruction asks for, if any.
pub fn check(persona: &Persona, language: Option<&Language>, reply: &str) -> Check {
    let words = text::words(reply);
    let english = persona.keywords.iter().chain([&persona.name]);
    let keywords = text::Keywords::of(english, language, &persona.translated_keywords);
    match keywords.find(&words) {
        Some(word) => Check::pass(format!("uses \"{word}\"")),
        None => Check::fail(format!(
            "uses no keyword of the {} persona ({})",
            persona.name,
            keywords.looked_in(&words)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    #[test]
    fn keyword_or_name() {
        let p = Persona {
            name: "pirate captain".into(),
            description: String::new(),
            keywords: vec!["ahoy".into(), "treasure".into()],
            translated_keywords: [("fra".to_string(), vec!["trésor".to_string()])].into(),
        };
        assert_eq!(check(&p, None, "Ahoy, matey!").verdict, Verdict::Pass);
        assert_eq!(
            check(&p, None, "I'm a Pirate Captain.").verdict,
            Verdict::Pass
        );
        assert_eq!(
            check(&p, None, "I am an accountant.").verdict,
            Verdict::Fail
        );
        let french = Language {
            name: "French".into(),
            code: "fra".into(),
            native: String::new(),
            ..Default::default()
        };
        let reply = "Mon trésor est caché.";
        assert_eq!(check(&p, Some(&french), reply).verdict, Verdict::Pass);
        let k = check(&p, None, reply);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.evidence.ends_with("(English)"), "{}", k.evidence);
    }
}
