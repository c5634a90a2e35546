//! "Always answer in French": detect the reply's language with whatlang.
//!
//! Detection runs on the prose (code removed) of the whole reply. A reply that mixes
//! languages is judged by whatlang's verdict on the whole text, which follows the
//! language of most of it: a French answer quoting an English title passes, an English
//! answer with one French greeting fails. Detection on very short texts is guesswork, so
//! those replies, and replies the detector is unsure about, are Undetermined, never Pass;
//! unless their function words read as English ([`super::function_words`]): then Fail.

use super::{function_words, problem, text, Check, Undecided};
use gatt::catalog::Language;

/// Below this many letters of prose the detector is not trusted.
pub const MIN_LETTERS: usize = 20;

/// Below this confidence, an unreliable detection is not trusted either. whatlang calls
/// a detection reliable above 0.9; between this and 0.9 the best guess still stands,
/// which keeps medium-length replies decidable.
pub const MIN_CONFIDENCE: f64 = 0.25;

pub fn check(lang: &Language, reply: &str) -> Check {
    if whatlang::Lang::from_code(&lang.code).is_none() {
        return problem(format!(
            "language code `{}` of {} is unknown to the detector",
            lang.code, lang.name
        ));
    }
    let prose = text::strip_code(reply);
    let letters = text::letter_count(&prose);
    // Where the detector cannot decide, English function words still can.
    let undecided = |why: String| match function_words::reads_as_english(&prose, &lang.code) {
        Some(words) => Check::fail(format!(
            "reads as English: English function words ({}) and none of {}; {why}",
            words.join(", "),
            lang.name
        )),
        None => Check::undetermined(Undecided::Unclear, why),
    };
    if letters < MIN_LETTERS {
        return undecided(format!(
            "too little prose to detect a language ({letters} letters, need {MIN_LETTERS})"
        ));
    }
    let Some(info) = whatlang::detect(&prose) else {
        return undecided("no language detected".to_string());
    };
    let found = info.lang();
    let confidence = info.confidence();
    if !info.is_reliable() && confidence < MIN_CONFIDENCE {
        return undecided(format!(
            "detection unsure: {} ({}) at confidence {confidence:.2}",
            found.eng_name(),
            found.code()
        ));
    }
    let detected = format!(
        "detected {} ({}) at confidence {confidence:.2}",
        found.eng_name(),
        found.code()
    );
    if found.code() == lang.code {
        Check::pass(detected)
    } else {
        Check::fail(format!(
            "{detected}, expected {} ({})",
            lang.name, lang.code
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    fn french() -> Language {
        Language {
            name: "French".into(),
            code: "fra".into(),
            native: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn french_passes_english_fails() {
        let fr = "Le ciel est bleu parce que l'air diffuse davantage la lumière bleue du soleil.";
        assert_eq!(check(&french(), fr).verdict, Verdict::Pass);
        let en = "The sky is blue because air scatters blue sunlight more than red light.";
        assert_eq!(check(&french(), en).verdict, Verdict::Fail);
    }

    #[test]
    fn an_undecided_reply_whose_function_words_are_english_fails() {
        let k = check(&french(), "Sure, here you go.");
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(
            k.evidence.starts_with(
                "reads as English: English function words (here, you) and none of French; \
                 too little prose"
            ),
            "{}",
            k.evidence
        );
        let k = check(&french(), "Je suis Mother Teresa.");
        assert_eq!(k.verdict, Verdict::Undetermined, "{}", k.evidence);
    }

    #[test]
    fn short_and_code_only_replies_are_undetermined() {
        assert_eq!(check(&french(), "Oui !").verdict, Verdict::Undetermined);
        let code = "```python\nprint('hello world, this is a long line of code')\n```";
        assert_eq!(check(&french(), code).verdict, Verdict::Undetermined);
    }

    #[test]
    fn a_code_the_detector_lacks_is_a_problem() {
        let klingon = Language {
            name: "Klingon".into(),
            code: "tlh".into(),
            native: String::new(),
            ..Default::default()
        };
        let k = check(&klingon, "Some long enough reply in whatever language.");
        assert!(k.is_problem());
    }
}
