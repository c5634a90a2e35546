//! Constraint catalogs (`templates/catalogs/`): what the generator can ask for and what
//! the evaluator needs to check it (aliases, keywords, language codes).
//!
//! The built-in catalogs are compiled in; a catalog file ([`CatalogOverride`]) replaces
//! one kind's entries with those `gatt constraints expand` writes (same JSON shape).

mod kinds;
mod overrides;

pub use kinds::{parse_kind, UnknownKind};
pub use overrides::CatalogOverride;

use crate::dialogue::{Constraint, ConstraintKind};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A hobby the instruction can ask the model to enjoy (`catalogs/hobbies.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hobby {
    /// The constraint's value, e.g. `"Tennis"`.
    pub name: String,
    /// Lowercase English words a reply about this hobby likely contains (the name first).
    pub keywords: Vec<String>,
    /// The same in other languages, keyed by [`Language::code`] (`"fra"`: `["robotique",
    /// ...]`): a reply written in the instructed language names the hobby in that
    /// language. Languages without an entry are checked with the English keywords only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translated_keywords: BTreeMap<String, Vec<String>>,
}

/// (kind, name, translated keywords) of one catalog entry.
type TranslatedEntry<'a> = (&'a str, &'a str, &'a BTreeMap<String, Vec<String>>);

fn hobby_translations(hobbies: &[Hobby]) -> impl Iterator<Item = TranslatedEntry<'_>> {
    hobbies
        .iter()
        .map(|h| ("hobby", h.name.as_str(), &h.translated_keywords))
}

fn persona_translations(personas: &[Persona]) -> impl Iterator<Item = TranslatedEntry<'_>> {
    personas
        .iter()
        .map(|p| ("persona", p.name.as_str(), &p.translated_keywords))
}

/// A hobby or persona file's `translated_keywords` are keyed by ISO 639-3 codes
/// (`"fra"`, the `code` of `languages.json`) and hold non-blank keywords: a key such as
/// `"French"` would never be looked up, and the check would silently fall back to
/// English.
fn check_translated_keywords<'a>(
    file: &str,
    entries: impl IntoIterator<Item = TranslatedEntry<'a>>,
) -> Result<()> {
    for (kind, name, translated) in entries {
        for (code, words) in translated {
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(Error::input(format!(
                    "{file}: {kind} `{name}`: translated_keywords key `{code}` is not an \
                     ISO 639-3 code such as `fra` (a language's `code` in languages.json)"
                )));
            }
            if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                return Err(Error::input(format!(
                    "{file}: {kind} `{name}`: translated_keywords `{code}` needs at least \
                     one keyword and no blank ones"
                )));
            }
        }
    }
    Ok(())
}

/// A language file's `false_friends` hold no blank word: a blank one would match nothing
/// and hide a typo.
fn check_false_friends(file: &str, languages: &[Language]) -> Result<()> {
    for l in languages {
        if let Some(i) = l.false_friends.iter().position(|w| w.trim().is_empty()) {
            return Err(Error::input(format!(
                "{file}: language `{}`: false_friends[{i}] is blank",
                l.name
            )));
        }
    }
    Ok(())
}

/// A public figure the model can be asked to act as (`catalogs/figures.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The constraint's value, e.g. `"Napoleon Bonaparte"`.
    pub name: String,
    /// Other names that identify the figure (surname, spellings without diacritics).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Who the figure is, for people reading the catalog ("French emperor and military
    /// leader"); no instruction or check uses it.
    #[serde(default)]
    pub description: String,
}

/// A language the model can be asked to answer in (`catalogs/languages.json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Language {
    /// The constraint's value, in English: `"French"`.
    pub name: String,
    /// ISO 639-3 code as the language detector reports it (`fra`, `cmn`, ...).
    pub code: String,
    /// The language's name for itself (`"français"`); informational.
    #[serde(default)]
    pub native: String,
    /// English hobby and persona keywords that are ordinary words of this language
    /// ("camera" is Italian for "room", "court" French for "short"): in a reply that
    /// should be in this language they are not taken as naming the hobby or persona
    /// (the entry's keywords in this language still count). Empty when the catalog
    /// file gives none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub false_friends: Vec<String>,
}

/// A fictional role the model can be asked to play (`catalogs/personas.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    /// The constraint's value, a short label: `"pirate captain"`.
    pub name: String,
    /// The role as the instruction states it ("a gruff pirate captain ...").
    pub description: String,
    /// English words a reply in this role likely uses (`"ahoy"`, `"treasure"`); the
    /// evaluator looks for them, or the name, on probe turns.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The same in other languages, keyed by [`Language::code`], as for
    /// [`Hobby::translated_keywords`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translated_keywords: BTreeMap<String, Vec<String>>,
}

/// A format rule checkable by code; `text` may hold one `{param}` placeholder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatRule {
    /// The constraint's value and the evaluator's name for the check: `"max_words"`.
    pub id: String,
    /// The rule as a phrasing's `{value}` states it: `"use at most {n} words"`.
    pub text: String,
    /// Placeholder name -> allowed values (e.g. `{"n": [20, 30]}`).
    #[serde(default)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

impl FormatRule {
    /// The placeholder's allowed values, as strings (JSON numbers in their JSON form);
    /// empty for a rule without a parameter.
    pub fn param_values(&self) -> Vec<String> {
        let Some(p) = &self.params else {
            return Vec::new();
        };
        p.values()
            .next()
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rule's text with its parameter filled in; the text as it is when the rule or
    /// the call has no parameter.
    pub fn render(&self, param: Option<&str>) -> String {
        match (&self.params, param) {
            (Some(p), Some(v)) => match p.keys().next() {
                Some(k) => self.text.replace(&format!("{{{k}}}"), v),
                None => self.text.clone(),
            },
            _ => self.text.clone(),
        }
    }
}

/// Verbose phrasings and the terse one, per kind (`{value}` is the constraint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phrasing {
    /// Full sentences ("Always answer in {value}."), one drawn at random per constraint.
    pub verbose: Vec<String>,
    /// The short form ("Language: {value}."), the paper's terse instructions.
    pub terse: String,
}

/// The phrasings of every known kind (`catalogs/phrasings.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phrasings {
    /// Phrasings of [`ConstraintKind::Hobby`].
    pub hobby: Phrasing,
    /// Phrasings of [`ConstraintKind::Language`].
    pub language: Phrasing,
    /// Phrasings of [`ConstraintKind::Figure`].
    pub figure: Phrasing,
    /// Phrasings of [`ConstraintKind::Persona`].
    pub persona: Phrasing,
    /// Phrasings of [`ConstraintKind::Format`].
    pub format: Phrasing,
}

impl Phrasings {
    /// The phrasings of `kind`; `None` for [`ConstraintKind::Other`].
    pub fn of(&self, kind: &ConstraintKind) -> Option<&Phrasing> {
        match kind {
            ConstraintKind::Hobby => Some(&self.hobby),
            ConstraintKind::Language => Some(&self.language),
            ConstraintKind::Figure => Some(&self.figure),
            ConstraintKind::Persona => Some(&self.persona),
            ConstraintKind::Format => Some(&self.format),
            ConstraintKind::Other(_) => None,
        }
    }
}

/// Probe questions asked at probe turns (the paper's "What is your name?")
/// (`users/probes.json`): a user turn whose answer shows whether the constraint still
/// holds. Languages and format rules need none: every reply shows them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Probes {
    /// Questions about the model's hobby ("What is your favorite hobby?").
    #[serde(default)]
    pub hobby: Vec<String>,
    /// Questions a public figure answers as themselves ("What is your name?").
    #[serde(default)]
    pub figure: Vec<String>,
    /// Questions a persona answers in character.
    #[serde(default)]
    pub persona: Vec<String>,
}

impl Probes {
    /// The probe questions of `kind`; empty for kinds without probes.
    pub fn of(&self, kind: &ConstraintKind) -> &[String] {
        match kind {
            ConstraintKind::Hobby => &self.hobby,
            ConstraintKind::Figure => &self.figure,
            ConstraintKind::Persona => &self.persona,
            _ => &[],
        }
    }
}

/// Everything the generator samples from and the evaluator checks against: one list
/// of entries per constraint kind, the phrasings, the probe questions and the user
/// messages. [`Catalog::builtin`] holds the files in `templates/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// `catalogs/hobbies.json`.
    pub hobbies: Vec<Hobby>,
    /// `catalogs/figures.json`.
    pub figures: Vec<Figure>,
    /// `catalogs/languages.json`.
    pub languages: Vec<Language>,
    /// `catalogs/personas.json`.
    pub personas: Vec<Persona>,
    /// `catalogs/formats.json`.
    pub formats: Vec<FormatRule>,
    /// Pairs of `kind:value` ids that are never combined in one instruction.
    pub incompatible: Vec<(String, String)>,
    /// How each kind is stated in an instruction.
    pub phrasings: Phrasings,
    /// Questions asked on the evaluator's probe turns.
    pub probes: Probes,
    /// Probe questions for training dialogues (`users/train_probes.json`, `gatt synth
    /// --probe-rate`): phrased apart from [`Catalog::probes`], so that the evaluator's
    /// probes stay held out.
    pub train_probes: Probes,
    /// The bank of user messages (`users/bank.json`, or the file given to
    /// [`Catalog::load_user_bank`]).
    pub user_bank: Vec<String>,
}

macro_rules! builtin_json {
    ($file:literal) => {
        include_str!(concat!("../../templates/", $file))
    };
}

fn parse<T: for<'de> Deserialize<'de>>(name: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::input(format!("{name}: {e}")))
}

#[derive(Deserialize)]
struct Bank {
    messages: Vec<String>,
}

impl Catalog {
    /// The catalogs shipped in `templates/`, compiled in (no file is read at run time).
    pub fn builtin() -> Catalog {
        let load = || -> Result<Catalog> {
            let pairs: Vec<[String; 2]> = parse(
                "incompatible.json",
                builtin_json!("catalogs/incompatible.json"),
            )?;
            Ok(Catalog {
                hobbies: parse("hobbies.json", builtin_json!("catalogs/hobbies.json"))?,
                figures: parse("figures.json", builtin_json!("catalogs/figures.json"))?,
                languages: parse("languages.json", builtin_json!("catalogs/languages.json"))?,
                personas: parse("personas.json", builtin_json!("catalogs/personas.json"))?,
                formats: parse("formats.json", builtin_json!("catalogs/formats.json"))?,
                incompatible: pairs.into_iter().map(|[a, b]| (a, b)).collect(),
                phrasings: parse("phrasings.json", builtin_json!("catalogs/phrasings.json"))?,
                probes: parse("probes.json", builtin_json!("users/probes.json"))?,
                train_probes: parse(
                    "train_probes.json",
                    builtin_json!("users/train_probes.json"),
                )?,
                user_bank: parse::<Bank>("bank.json", builtin_json!("users/bank.json"))?.messages,
            })
        };
        load().expect("built-in catalogs in templates/ are valid")
    }

    /// Replaces one kind's entries with those of a catalog file (a JSON list of entries
    /// of that kind, as `gatt constraints expand` writes).
    ///
    /// # Errors
    ///
    /// An input error when the file is missing, is not a JSON list of that kind's
    /// entries, or `kind` is [`ConstraintKind::Other`]; a runtime error when it exists
    /// but cannot be read.
    pub fn load_file(&mut self, kind: &ConstraintKind, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let name = path.display().to_string();
        match kind {
            ConstraintKind::Hobby => {
                let hobbies: Vec<Hobby> = parse(&name, &text)?;
                check_translated_keywords(&name, hobby_translations(&hobbies))?;
                self.hobbies = hobbies;
            }
            ConstraintKind::Figure => self.figures = parse(&name, &text)?,
            ConstraintKind::Language => {
                let languages: Vec<Language> = parse(&name, &text)?;
                check_false_friends(&name, &languages)?;
                self.languages = languages;
            }
            ConstraintKind::Persona => {
                let personas: Vec<Persona> = parse(&name, &text)?;
                check_translated_keywords(&name, persona_translations(&personas))?;
                self.personas = personas;
            }
            ConstraintKind::Format => self.formats = parse(&name, &text)?,
            ConstraintKind::Other(k) => {
                return Err(Error::input(format!("{name}: unknown catalog kind `{k}`")))
            }
        }
        Ok(())
    }

    /// Replaces the user-message bank with a file in the same format as the built-in
    /// one (`{"messages": [...]}`), e.g. messages held out from training. Blank messages
    /// are dropped.
    ///
    /// # Errors
    ///
    /// An input error when the file is missing, malformed, or has no non-blank message;
    /// a runtime error when it exists but cannot be read.
    pub fn load_user_bank(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let bank: Bank = parse(&path.display().to_string(), &text)?;
        let messages: Vec<String> = bank
            .messages
            .into_iter()
            .filter(|m| !m.trim().is_empty())
            .collect();
        if messages.is_empty() {
            return Err(Error::input(format!(
                "{}: `messages` is empty",
                path.display()
            )));
        }
        self.user_bank = messages;
        Ok(())
    }

    /// The catalog entry names of one kind (what `Constraint::value` holds).
    pub fn values(&self, kind: &ConstraintKind) -> Vec<&str> {
        match kind {
            ConstraintKind::Hobby => self.hobbies.iter().map(|h| h.name.as_str()).collect(),
            ConstraintKind::Figure => self.figures.iter().map(|h| h.name.as_str()).collect(),
            ConstraintKind::Language => self.languages.iter().map(|h| h.name.as_str()).collect(),
            ConstraintKind::Persona => self.personas.iter().map(|h| h.name.as_str()).collect(),
            ConstraintKind::Format => self.formats.iter().map(|h| h.id.as_str()).collect(),
            ConstraintKind::Other(_) => Vec::new(),
        }
    }

    /// The hobby named `name`, ignoring ASCII case.
    pub fn hobby(&self, name: &str) -> Option<&Hobby> {
        self.hobbies
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
    /// The figure named `name`, ignoring ASCII case (aliases do not count).
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
    /// The language named `name` (its English name), ignoring ASCII case.
    pub fn language(&self, name: &str) -> Option<&Language> {
        self.languages
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
    /// The persona named `name`, ignoring ASCII case.
    pub fn persona(&self, name: &str) -> Option<&Persona> {
        self.personas
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
    /// The format rule with this id (exact match).
    pub fn format(&self, id: &str) -> Option<&FormatRule> {
        self.formats.iter().find(|h| h.id == id)
    }

    /// What a constraint puts in a phrasing's `{value}`: a persona's description ("a gruff
    /// pirate captain ..."), a format rule's rendered text, otherwise the value itself.
    pub fn value_text(&self, c: &Constraint) -> String {
        match c.kind {
            ConstraintKind::Persona => self.persona(&c.value).map(|p| p.description.clone()),
            ConstraintKind::Format => self.format(&c.value).map(|r| r.render(c.param.as_deref())),
            _ => None,
        }
        .unwrap_or_else(|| c.value.clone())
    }

    /// One constraint stated with `pattern` (a phrasing holding `{value}`), or as
    /// `kind: value.` without one.
    pub fn state(&self, c: &Constraint, pattern: Option<&str>) -> String {
        let value = self.value_text(c);
        match pattern {
            Some(p) => tidy(&p.replace("{value}", &value)),
            None => format!("{}: {value}.", c.kind),
        }
    }

    /// `kind:value` id of a constraint, as `incompatible.json` names them.
    pub fn id_of(c: &Constraint) -> String {
        format!("{}:{}", c.kind, c.value)
    }

    /// True when the two constraints may share one instruction: not two of one kind
    /// (except distinct format rules), and not a pair listed in `incompatible.json`.
    pub fn compatible(&self, a: &Constraint, b: &Constraint) -> bool {
        if a.kind == b.kind && a.kind != ConstraintKind::Format {
            return false;
        }
        if a.kind == ConstraintKind::Format
            && b.kind == ConstraintKind::Format
            && a.value == b.value
        {
            return false;
        }
        let (x, y) = (Self::id_of(a), Self::id_of(b));
        !self
            .incompatible
            .iter()
            .any(|(p, q)| (p == &x && q == &y) || (p == &y && q == &x))
    }
}

/// A value ending in punctuation inside a phrasing ending in "." reads `..`; drop one.
fn tidy(s: &str) -> String {
    for p in ["?.", "!.", "..", ".\"."] {
        if let Some(head) = s.strip_suffix(p) {
            return format!("{head}{}", &p[..p.len() - 1]);
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_hobbies_and_personas_have_keywords_in_the_languages_the_default_model_writes() {
        let c = Catalog::builtin();
        let entries: Vec<TranslatedEntry> = hobby_translations(&c.hobbies)
            .chain(persona_translations(&c.personas))
            .collect();
        check_translated_keywords("built-in", entries.iter().copied()).unwrap();
        let codes: Vec<&str> = c.languages.iter().map(|l| l.code.as_str()).collect();
        for (kind, name, translated) in entries {
            for code in ["fra", "spa", "deu", "ita", "por"] {
                assert!(translated.contains_key(code), "{kind} {name}: {code}");
            }
            for (code, words) in translated {
                assert!(codes.contains(&code.as_str()), "{kind} {name}: {code}");
                for w in words {
                    assert_eq!(w, &w.to_lowercase(), "{kind} {name}: {code}");
                }
            }
        }
    }

    /// Each built-in false friend is an English name or keyword of a built-in hobby or
    /// persona (a word no check looks for would be a stale entry), and the five
    /// languages the default model writes have some.
    #[test]
    fn builtin_false_friends_are_english_keywords_of_the_catalog() {
        let c = Catalog::builtin();
        let english: Vec<String> = c
            .hobbies
            .iter()
            .flat_map(|h| std::iter::once(&h.name).chain(&h.keywords))
            .chain(
                c.personas
                    .iter()
                    .flat_map(|p| std::iter::once(&p.name).chain(&p.keywords)),
            )
            .map(|w| w.to_lowercase())
            .collect();
        check_false_friends("built-in", &c.languages).unwrap();
        for l in &c.languages {
            for w in &l.false_friends {
                assert!(
                    english.contains(w),
                    "{}: `{w}` is no English keyword",
                    l.name
                );
            }
        }
        for code in ["fra", "spa", "deu", "ita", "por"] {
            let l = c.languages.iter().find(|l| l.code == code).unwrap();
            assert!(!l.false_friends.is_empty(), "{code}");
        }
    }

    #[test]
    fn builtin_catalogs_meet_their_minimum_sizes() {
        let c = Catalog::builtin();
        assert!(c.hobbies.len() >= 100);
        assert!(c.figures.len() >= 100);
        assert!(c.languages.len() >= 20);
        assert!(c.formats.len() >= 8);
        assert!(c.user_bank.len() >= 300);
        assert!(c.probes.figure.iter().any(|p| p == "What is your name?"));
    }

    #[test]
    fn incompatible_pairs_are_refused() {
        let c = Catalog::builtin();
        let f = |v: &str| Constraint::new(ConstraintKind::Format, v);
        assert!(!c.compatible(&f("lowercase"), &f("uppercase")));
        assert!(!c.compatible(&f("json"), &f("haiku")));
        let fr = Constraint::new(ConstraintKind::Language, "French");
        let de = Constraint::new(ConstraintKind::Language, "German");
        assert!(!c.compatible(&fr, &de));
        assert!(c.compatible(&fr, &Constraint::new(ConstraintKind::Hobby, "Tennis")));
    }

    #[test]
    fn format_rules_render_their_parameter() {
        let c = Catalog::builtin();
        let r = c.format("max_words").unwrap();
        assert!(!r.param_values().is_empty());
        assert!(r.render(Some("20")).contains("20"));
    }
}
