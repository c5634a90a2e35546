//! A second opinion for replies the language detector cannot decide (too short, or its
//! best guess too unsure): "I am Pelé, a Portuguese language model." in a dialogue that
//! asks for Portuguese reads "Catalan, confidence 0.03" to whatlang, and an open-set
//! detector on a dozen words is guesswork. Function words (pronouns, articles,
//! auxiliaries, prepositions) are not: a reply with several English ones and not one of
//! the instructed language's is written in English.
//!
//! The instructed language's lists are folded ([`super::text::fold`]); English words are
//! matched with their accents kept, so Portuguese "só" is not English "so" nor French
//! "thé" "the". Lists exist for the languages the default model writes (English,
//! French, Spanish, German, Italian, Portuguese). A word both languages of a comparison
//! use ("a", "in", "me") counts for neither, and each English word counts once.

use super::text;

/// English function words.
const ENGLISH: &[&str] = &[
    "i", "am", "is", "are", "was", "the", "my", "you", "your", "and", "with", "from", "this",
    "that", "it", "to", "of", "in", "for", "how", "can", "what", "here", "do", "have", "be", "we",
    "they", "he", "she", "not", "but", "will", "there", "me", "a", "an", "on", "so", "as", "at",
    "by", "like", "would", "about",
];

/// Function words of the instructed language, by ISO 639-3 code.
fn words_of(code: &str) -> Option<&'static [&'static str]> {
    Some(match code {
        "fra" => &[
            "je", "tu", "il", "elle", "nous", "vous", "ils", "le", "la", "les", "un", "une", "des",
            "du", "de", "et", "est", "suis", "sont", "mon", "ma", "mes", "ton", "ta", "votre",
            "notre", "ce", "cette", "qui", "que", "pour", "avec", "dans", "sur", "pas", "ne",
            "mais", "ou", "au", "aux", "c", "j", "l", "d", "n", "m", "qu", "oui", "tres", "on",
            "a", "en", "me", "as",
        ],
        "spa" => &[
            "yo", "tu", "el", "ella", "nosotros", "los", "las", "un", "una", "unos", "de", "del",
            "y", "es", "soy", "son", "esta", "estoy", "mi", "mis", "su", "sus", "que", "para",
            "con", "en", "por", "pero", "como", "muy", "si", "lo", "le", "les", "hay", "al",
            "tambien", "me", "a", "no", "he",
        ],
        "deu" => &[
            "ich", "du", "er", "sie", "es", "wir", "ihr", "der", "die", "das", "den", "dem", "ein",
            "eine", "einen", "und", "ist", "bin", "sind", "mein", "meine", "mit", "fur", "von",
            "zu", "auf", "nicht", "aber", "auch", "wie", "was", "ja", "nein", "sehr", "im", "am",
            "an", "in", "so", "will", "gern", "gerne", "mich", "mir",
        ],
        "ita" => &[
            "io", "tu", "lui", "lei", "noi", "voi", "il", "lo", "la", "gli", "le", "un", "una",
            "uno", "di", "del", "della", "e", "che", "per", "con", "non", "sono", "sei", "mi",
            "mio", "mia", "ma", "anche", "come", "molto", "si", "ci", "in", "da", "al", "alla",
            "i", "ho", "ha", "piace", "a", "me", "so", "do",
        ],
        "por" => &[
            "eu", "tu", "ele", "ela", "nos", "voce", "o", "os", "a", "as", "um", "uma", "de", "do",
            "da", "dos", "das", "e", "que", "para", "com", "em", "no", "na", "nao", "sou", "sao",
            "meu", "minha", "mas", "tambem", "como", "muito", "sim", "por", "me", "se", "gosto",
        ],
        _ => return None,
    })
}

/// English function words a reply needs, with none of the instructed language's, to
/// read as English.
pub const MIN_ENGLISH: usize = 2;

/// The distinct English function words of `prose` (in order of first use) when it
/// reads as English rather than the language of `code`: at least [`MIN_ENGLISH`] of
/// them and not one function word of that language. `None` when it does not, or when
/// there are no lists for `code` (or `code` is English).
pub fn reads_as_english(prose: &str, code: &str) -> Option<Vec<String>> {
    let theirs = words_of(code)?;
    // Lowercase with accents kept: "só" stays "só".
    let lower = prose
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase);
    let mut english: Vec<String> = Vec::new();
    for w in lower {
        let function = ENGLISH.contains(&w.as_str()) && !theirs.contains(&w.as_str());
        if function && !english.contains(&w) {
            english.push(w);
        }
    }
    let own = text::words(prose)
        .iter()
        .any(|w| theirs.contains(&w.as_str()) && !ENGLISH.contains(&w.as_str()));
    (english.len() >= MIN_ENGLISH && !own).then_some(english)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_replies_to_a_language_instruction_are_found() {
        let english = [
            (
                "I am Pelé, a Portuguese language model created by Alibaba Cloud.",
                "por",
            ),
            (
                "I like playing with my dog and playing outside with friends.",
                "por",
            ),
            ("My name is Voltaire.", "ita"),
            ("Sure, here you go.", "fra"),
            ("Hello! How can I help?", "spa"),
            ("I love hiking, it is my favorite.", "deu"),
        ];
        for (reply, code) in english {
            assert!(reads_as_english(reply, code).is_some(), "{code}: {reply}");
        }
        let found = reads_as_english("I am Pelé, a model made by them, by me.", "por").unwrap();
        assert_eq!(
            found,
            ["i", "am", "by"],
            "\"a\", \"me\" are Portuguese; once each"
        );
    }

    #[test]
    fn short_replies_in_the_language_with_english_names_are_not() {
        let theirs = [
            ("Je suis Mother Teresa.", "fra"),
            ("Ich bin Christopher Columbus.", "deu"),
            ("Mein Hobby ist Origami.", "deu"),
            ("Sono Voltaire, the philosopher.", "ita"),
            ("Eu sou o Pelé.", "por"),
            ("Me llamo Frida Kahlo.", "spa"),
            // One English word is not enough, nor accented words that fold into English.
            ("Choco comes from Brazil.", "por"),
            ("Tô só cansado.", "por"),
            ("Un thé, to go.", "fra"),
            ("He visto a Frida.", "spa"),
            ("Certo!", "ita"),
        ];
        for (reply, code) in theirs {
            assert_eq!(reads_as_english(reply, code), None, "{code}: {reply}");
        }
        // No lists: no opinion.
        assert_eq!(reads_as_english("My name is Voltaire.", "jpn"), None);
        assert_eq!(reads_as_english("My name is Voltaire.", "eng"), None);
    }
}
