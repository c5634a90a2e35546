//! Replies that step out of the role the instruction gives: "As an AI language model, I
//! don't have personal preferences" in a dialogue where the model is Napoleon, a pirate
//! captain, or someone whose favorite hobby is chess. Such a reply may still name the
//! figure or the hobby (and pass the evaluator's keyword check), but as training data it
//! teaches the fine-tune to disclaim the role it was given. Instruction-tuned teachers
//! write them often; peers' dataset cleaning (the "unfiltered" ShareGPT sets) drops the
//! same phrases.
//!
//! The phrases are self-descriptions only, in English and the five languages the default
//! model writes, matched as whole words ignoring case and accents; a reply *about*
//! language models or AI is not refused.

/// Self-descriptions that break a role, as lowercase words without accents.
const PHRASES: &[&str] = &[
    // English
    "as an ai",
    "as a language model",
    "as an artificial intelligence",
    "i am an ai",
    "i m an ai",
    "i am a language model",
    "i m a language model",
    "i am an artificial intelligence",
    "i don t have personal preferences",
    "i do not have personal preferences",
    "i don t have personal hobbies",
    "i do not have personal hobbies",
    // French
    "en tant qu ia",
    "en tant qu intelligence artificielle",
    "en tant que modele de langage",
    "je suis une ia",
    "je suis une intelligence artificielle",
    "je suis un modele de langage",
    // Spanish
    "como una ia",
    "como modelo de lenguaje",
    "como un modelo de lenguaje",
    "como una inteligencia artificial",
    "soy una ia",
    "soy una inteligencia artificial",
    "soy un modelo de lenguaje",
    // German
    "als ki",
    "als sprachmodell",
    "als kunstliche intelligenz",
    "ich bin eine ki",
    "ich bin ein sprachmodell",
    "ich bin eine kunstliche intelligenz",
    // Italian
    "in quanto ia",
    "come modello linguistico",
    "in quanto modello linguistico",
    "come intelligenza artificiale",
    "sono un ia",
    "sono un intelligenza artificiale",
    "sono un modello linguistico",
    // Portuguese
    "como uma ia",
    "como modelo de linguagem",
    "como um modelo de linguagem",
    "sou uma ia",
    "sou uma inteligencia artificial",
    "sou um modelo de linguagem",
];

/// The first role-breaking self-description in `text`, if any (as listed in
/// [`PHRASES`]).
pub fn breaks_character(text: &str) -> Option<&'static str> {
    // Folded words: case, accents, ligatures and punctuation aside.
    let words = format!(" {} ", gatt::text::words(text).join(" "));
    PHRASES
        .iter()
        .find(|p| words.contains(&format!(" {p} ")))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disclaimers_in_six_languages_are_found() {
        for (text, phrase) in [
            (
                "As an AI language model, I don't have personal preferences.",
                "as an ai",
            ),
            ("I'm an AI, but chess sounds fun.", "i m an ai"),
            ("En tant qu'IA, je n'ai pas de loisirs.", "en tant qu ia"),
            (
                "Como modelo de lenguaje, no tengo hobbies.",
                "como modelo de lenguaje",
            ),
            ("Als KI habe ich keine Hobbys.", "als ki"),
            (
                "Ich bin eine künstliche Intelligenz.",
                "ich bin eine kunstliche intelligenz",
            ),
            (
                "Sono un'intelligenza artificiale.",
                "sono un intelligenza artificiale",
            ),
            ("Sou uma IA e não tenho hobbies.", "sou uma ia"),
        ] {
            assert_eq!(breaks_character(text), Some(phrase), "{text}");
        }
    }

    #[test]
    fn talk_about_ai_in_character_is_kept() {
        for text in [
            "I am Napoleon Bonaparte, emperor of the French.",
            "My favorite hobby is training a language model on my old letters.",
            "La robotica e l'intelligenza artificiale sono la mia passione.",
            "Mi hobby es la IA: como ingeniero, construyo robots.",
            "Aidan said hi.",
            // Portuguese "ia" is also "went": "como eu ia dizendo".
            "Como ia dizendo, adoro xadrez.",
        ] {
            assert_eq!(breaks_character(text), None, "{text}");
        }
    }
}
