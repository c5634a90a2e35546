//! "You are a gruff pirate captain": on a probe turn ("What do you do for a living?")
//! the reply uses one of the persona's catalog keywords ("ahoy", "treasure") or its name,
//! as whole words, ignoring case.

use super::{text, Check};
use gatt::catalog::Persona;

pub fn check(persona: &Persona, reply: &str) -> Check {
    let words = text::words(reply);
    match text::first_phrase(&words, persona.keywords.iter().chain([&persona.name])) {
        Some(word) => Check::pass(format!("uses \"{word}\"")),
        None => Check::fail(format!("uses no keyword of the {} persona", persona.name)),
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
        };
        assert_eq!(check(&p, "Ahoy, matey!").verdict, Verdict::Pass);
        assert_eq!(check(&p, "I'm a Pirate Captain.").verdict, Verdict::Pass);
        assert_eq!(check(&p, "I am an accountant.").verdict, Verdict::Fail);
    }
}
