//! With no instruction at all, a reply should be in the language the user writes in.
//!
//! This is the control for collateral damage: a fine-tune on dialogues that ask for
//! French may start answering English questions in French even when nobody asked (the
//! drift that the Llama 2 paper's GAtt data must not teach). `gatt eval
//! --no-instruction` asks every model plain questions, with no system message, and
//! checks each reply against the user's language; base and tuned should score alike.
//!
//! The user's language is detected once per dialogue, over all its user messages
//! together (one short question is too little text for a detector); the reply is then
//! checked exactly as a "Always answer in LANGUAGE" constraint is
//! ([`super::language`]), with the same thresholds for too-short or unsure replies.

use super::{language, text, Check, Undecided};
use gatt::catalog::Language;

/// The kind of the rows this check writes in a report.
pub const KIND: &str = "user_language";

/// The language of the user's messages (all of one dialogue's, joined), or `None` when
/// the detector cannot tell: fewer than [`language::MIN_LETTERS`] letters of prose, or
/// a detection below [`language::MIN_CONFIDENCE`] that whatlang does not call reliable.
pub fn detect(user_text: &str) -> Option<Language> {
    let prose = text::strip_code(user_text);
    if text::letter_count(&prose) < language::MIN_LETTERS {
        return None;
    }
    let info = whatlang::detect(&prose)?;
    if !info.is_reliable() && info.confidence() < language::MIN_CONFIDENCE {
        return None;
    }
    Some(Language {
        name: info.lang().eng_name().to_string(),
        code: info.lang().code().to_string(),
        native: String::new(),
        ..Default::default()
    })
}

/// Checks that `reply` is in `user` (the result of [`detect`]); Undetermined when the
/// user's language could not be told, an empty reply fails.
pub fn check(user: Option<&Language>, reply: &str) -> Check {
    if reply.trim().is_empty() {
        return Check::fail(super::EMPTY_REPLY);
    }
    match user {
        Some(lang) => language::check(lang, reply),
        None => Check::undetermined(
            Undecided::Unclear,
            "the user's messages are too short or too mixed to tell their language",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    const USER: &str = "Why is the sky blue? Can you explain how rainbows form after the rain?";

    #[test]
    fn english_questions_want_english_replies() {
        let en = detect(USER).unwrap();
        assert_eq!((en.name.as_str(), en.code.as_str()), ("English", "eng"));
        let reply = "Sunlight is scattered by the air, and blue light is scattered the most.";
        assert_eq!(check(Some(&en), reply).verdict, Verdict::Pass);
        let french = "La lumière du soleil est diffusée par l'air, surtout la lumière bleue.";
        let k = check(Some(&en), french);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.evidence.contains("expected English"), "{}", k.evidence);
    }

    #[test]
    fn short_users_and_empty_replies() {
        assert_eq!(detect("Hi!"), None);
        let k = check(None, "Hello there, how can I help you today with anything?");
        assert_eq!(k.undecided, Some(Undecided::Unclear));
        let en = detect(USER).unwrap();
        assert_eq!(check(Some(&en), "  ").verdict, Verdict::Fail);
    }

    #[test]
    fn a_german_user_wants_german() {
        let de = detect("Warum ist der Himmel blau? Kannst du mir das bitte genau erklären?");
        assert_eq!(de.unwrap().code, "deu");
    }
}
