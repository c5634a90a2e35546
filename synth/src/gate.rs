//! The quality gate: cheap checks that reject a sampled reply before it can become
//! training data (the paper's sampling step is "analogous to rejection sampling").
//!
//! A candidate is rejected when it is empty or whitespace only, degenerate (a phrase
//! repeated over and over, "la Femme, la Femme, la Femme, ..."), in the wrong script
//! entirely (the instruction asked for Russian and the reply has no Cyrillic; the user
//! wrote English and the reply is all Chinese), clearly in another language than the
//! user's when no language was asked for (an English question answered in Spanish, which
//! would teach a fine-tune to drift), out of the role the instruction gives ("As an AI
//! language model, ..." when the model is to be a figure, a persona or have a hobby:
//! [`character`]), or cut at the token limit (under
//! [`CutMode::Resample`] and [`CutMode::DropEot`]). When every candidate of a turn is
//! rejected, the turn is sampled again with another seed, up to
//! [`GateOptions::resample_tries`] times; then the dialogue is dropped (or, under
//! [`CutMode::DropEot`], a final reply that was only cut is kept without its end-of-turn
//! token). Everything is counted by reason in [`GateCounts`].

pub mod character;

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Why a candidate reply (or, by its last try, a dialogue) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Empty or whitespace only.
    Empty,
    /// A phrase repeated until the reply is mostly repetition.
    Repetitive,
    /// Written in another script than the one asked for (or the user's).
    WrongScript,
    /// No language was asked for, and the reply is in another language than the user's
    /// (an English question answered in Spanish): data that would teach a fine-tune to
    /// drift into a language nobody asked for.
    WrongLanguage,
    /// The instruction gives a role (a public figure, a persona, a hobby of its own) and
    /// the reply steps out of it: "As an AI language model, I don't have personal
    /// preferences" ([`character::breaks_character`]).
    BreaksCharacter,
    /// Cut at the token limit (`finished` false).
    Cut,
    /// A whole dialogue: its replies kept the instruction less often than
    /// `--min-adherence` asks (by the scorer's checks).
    LowAdherence,
}

impl Rejection {
    /// The name counts and reports use (`empty`, `repetitive`, `wrong_script`,
    /// `wrong_language`, `breaks_character`, `cut`, `low_adherence`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::Repetitive => "repetitive",
            Rejection::WrongScript => "wrong_script",
            Rejection::WrongLanguage => "wrong_language",
            Rejection::BreaksCharacter => "breaks_character",
            Rejection::Cut => "cut",
            Rejection::LowAdherence => "low_adherence",
        }
    }
}

/// What the gate does with replies cut at the token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutMode {
    /// Reject them: resample the turn, then drop the dialogue.
    #[default]
    Resample,
    /// As `Resample`, but a final reply still cut after the tries is kept, trained
    /// without its end-of-turn token (`meta.final_end_of_turn: false`).
    DropEot,
    /// Keep them as they are (trained as if complete; explicit).
    Keep,
}

impl CutMode {
    /// Every value, in declaration order.
    pub const ALL: &'static [CutMode] = &[CutMode::Resample, CutMode::DropEot, CutMode::Keep];

    /// The value's name (`resample`, `drop-eot`, `keep`).
    pub fn as_str(self) -> &'static str {
        match self {
            CutMode::Resample => "resample",
            CutMode::DropEot => "drop-eot",
            CutMode::Keep => "keep",
        }
    }
}

impl std::fmt::Display for CutMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CutMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        gatt::names::parse(s, CutMode::ALL, CutMode::as_str)
    }
}

/// The gate's settings (part of [`crate::SynthOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GateOptions {
    /// What to do with cut replies.
    pub cut: CutMode,
    /// New tries for a turn whose candidates were all rejected, or whose chosen reply
    /// fell below `min_adherence`, before the dialogue is dropped (0: drop at once).
    pub resample_tries: usize,
    /// Keep a dialogue only if its replies passed at least this share of the scorer's
    /// decided checks ([`crate::Scorer::adherence`]); 0 keeps every dialogue. A dialogue
    /// with no decided check is kept. A turn whose chosen reply alone falls below it is
    /// sampled again (`resample_tries`); at 1, a dialogue whose turn fails every try is
    /// dropped at once.
    pub min_adherence: f64,
}

impl Default for GateOptions {
    /// Resample cut replies, up to [`GateOptions::DEFAULT_RESAMPLE_TRIES`] tries.
    fn default() -> Self {
        GateOptions {
            cut: CutMode::default(),
            resample_tries: Self::DEFAULT_RESAMPLE_TRIES,
            min_adherence: 0.0,
        }
    }
}

impl GateOptions {
    /// New tries of the default settings.
    pub const DEFAULT_RESAMPLE_TRIES: usize = 3;
}

/// What the gate rejected, summed over a run (`run.json` and the report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCounts {
    /// Dialogues planned (this shard's, resumed chunks included).
    pub dialogues: usize,
    /// Of those, dialogues written to the dataset.
    pub kept: usize,
    /// Dialogues dropped, by the reason their last try was rejected for.
    pub dropped: BTreeMap<Rejection, usize>,
    /// Candidate replies rejected, by reason (over every try).
    pub candidates_rejected: BTreeMap<Rejection, usize>,
    /// Turns sampled again because every candidate was rejected (each try counts).
    pub resampled_turns: usize,
    /// Turns sampled again because the kept reply fell below `--min-adherence` on its
    /// own checks (each try counts).
    #[serde(default)]
    pub resampled_for_adherence: usize,
    /// Kept dialogues whose final reply was cut and is trained without its end-of-turn
    /// token (`--cut-replies drop-eot`).
    pub kept_without_end_of_turn: usize,
    /// Kept dialogues with a reply cut at the token limit, as it is (`--cut-replies keep`).
    pub kept_cut: usize,
    /// What the judge model said about the candidates (`--judge-model`); zero without one.
    #[serde(default)]
    pub judge: JudgeCounts,
}

/// What a judge model said about candidate replies, summed over a run.
///
/// A candidate is judged when its choice is open (it passed the gate and another one did
/// too) or when `--min-adherence` needs its verdicts, and its dialogue has a hobby,
/// figure or persona: one question per such constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Candidate replies the judge was asked about.
    pub candidates_judged: usize,
    /// Of those, candidates it said no to on at least one constraint.
    pub candidates_rejected: usize,
    /// Questions asked (one per judged candidate and constraint).
    pub questions: usize,
    /// Answers yes.
    pub yes: usize,
    /// Answers no.
    pub no: usize,
    /// Answers neither yes nor no (counted as no verdict).
    pub neither: usize,
    /// Turns whose kept reply differs from the one the scorer would keep without the
    /// judge (the other counts cover every try, kept or sampled again).
    pub picks_changed: usize,
}

impl JudgeCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &JudgeCounts) {
        self.candidates_judged += other.candidates_judged;
        self.candidates_rejected += other.candidates_rejected;
        self.questions += other.questions;
        self.yes += other.yes;
        self.no += other.no;
        self.neither += other.neither;
        self.picks_changed += other.picks_changed;
    }
}

impl GateCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &GateCounts) {
        self.dialogues += other.dialogues;
        self.kept += other.kept;
        for (r, n) in &other.dropped {
            *self.dropped.entry(*r).or_default() += n;
        }
        for (r, n) in &other.candidates_rejected {
            *self.candidates_rejected.entry(*r).or_default() += n;
        }
        self.resampled_turns += other.resampled_turns;
        self.resampled_for_adherence += other.resampled_for_adherence;
        self.kept_without_end_of_turn += other.kept_without_end_of_turn;
        self.kept_cut += other.kept_cut;
        self.judge.add(&other.judge);
    }

    /// Dialogues dropped, all reasons together.
    pub fn dropped_total(&self) -> usize {
        self.dropped.values().sum()
    }
}

/// The content checks (everything but the cut): the first that fails, in the order empty,
/// repetitive, wrong script, wrong language, breaks character.
pub fn check_text(text: &str, want: &Expected) -> Option<Rejection> {
    if text.trim().is_empty() {
        return Some(Rejection::Empty);
    }
    if repetitive(text) {
        return Some(Rejection::Repetitive);
    }
    if want.script.is_some_and(|s| wrong_script(text, s)) {
        return Some(Rejection::WrongScript);
    }
    if want.language.is_some_and(|l| wrong_language(text, l)) {
        return Some(Rejection::WrongLanguage);
    }
    if want.in_role && character::breaks_character(text).is_some() {
        return Some(Rejection::BreaksCharacter);
    }
    None
}

/// What a reply should be written in, as far as the gate checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    /// The script: the requested language's, else the user message's.
    pub script: Option<Script>,
    /// The user's language, when no language was asked for and the user's message
    /// says it clearly (whatlang, reliable detection); `None` otherwise.
    pub language: Option<whatlang::Lang>,
    /// The instruction gives the model a role to keep: a figure, a persona or a hobby.
    pub in_role: bool,
}

/// What a reply in a dialogue whose user messages are `users` should be written in,
/// under `constraints`: the requested language's script (read from the catalog's native
/// name, "русский" is Cyrillic); or, with no language constraint, the script and
/// language of the user's messages, all of them together (one short question is too
/// little text to tell English from Javanese).
pub fn expected(constraints: &[Constraint], catalog: &Catalog, users: &[String]) -> Expected {
    let language = constraints
        .iter()
        .find(|c| c.kind == ConstraintKind::Language)
        .and_then(|c| catalog.language(&c.value));
    let in_role = constraints.iter().any(|c| {
        matches!(
            c.kind,
            ConstraintKind::Figure | ConstraintKind::Persona | ConstraintKind::Hobby
        )
    });
    match language {
        Some(l) => Expected {
            script: dominant_script(&l.native, 1),
            language: None,
            in_role,
        },
        None => {
            let user = users.join("\n");
            Expected {
                script: dominant_script(&user, 8),
                language: clear_language(&user),
                in_role,
            }
        }
    }
}

/// Letters a text needs before the gate trusts a language detection on it.
const MIN_LANGUAGE_LETTERS: usize = 40;

/// The language of `text` when whatlang is sure of it (a reliable detection on at least
/// [`MIN_LANGUAGE_LETTERS`] letters).
fn clear_language(text: &str) -> Option<whatlang::Lang> {
    if text.chars().filter(|c| c.is_alphabetic()).count() < MIN_LANGUAGE_LETTERS {
        return None;
    }
    whatlang::detect(text)
        .filter(whatlang::Info::is_reliable)
        .map(|i| i.lang())
}

/// True when the reply is clearly ([`clear_language`]) in another language than `want`.
/// Code blocks count as text here; replies that are mostly code rarely detect reliably.
fn wrong_language(text: &str, want: whatlang::Lang) -> bool {
    clear_language(text).is_some_and(|got| got != want)
}

/// Words (lowercased, without punctuation) of a run that repeats with a period of at most
/// this many words...
const MAX_PERIOD_WORDS: usize = 12;
/// ...at least this many times...
const MIN_REPEATS: usize = 4;
/// ...covering at least this many words, make a reply degenerate.
const MIN_RUN_WORDS: usize = 12;
/// The same on letters, for scripts written without spaces.
const MAX_PERIOD_CHARS: usize = 24;
/// Letters a repeated run must cover.
const MIN_RUN_CHARS: usize = 48;
/// When word 4-grams seen at least [`MIN_NGRAM_REPEATS`] times cover this share of a
/// reply's words (of at least 16), it is mostly repetition even when its repeats are not
/// adjacent ("the cat sat on the mat because the cat sat on the mat when ...").
const MAX_REPEATED_SHARE: f64 = 0.5;
/// See [`MAX_REPEATED_SHARE`].
const MIN_NGRAM_REPEATS: usize = 3;

/// True when `text` is mostly a phrase repeated: a run of at least [`MIN_REPEATS`]
/// adjacent repetitions of a phrase of up to [`MAX_PERIOD_WORDS`] words covering at
/// least [`MIN_RUN_WORDS`] words (or the same on letters, for text without spaces), or
/// half its words inside 4-grams it repeats at least 3 times.
pub fn repetitive(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if periodic_run(&words, MAX_PERIOD_WORDS, MIN_RUN_WORDS) {
        return true;
    }
    if words.len() >= 16 {
        let mut seen: HashMap<&[String], usize> = HashMap::new();
        for g in words.windows(4) {
            *seen.entry(g).or_default() += 1;
        }
        let mut covered = vec![false; words.len()];
        for (i, g) in words.windows(4).enumerate() {
            if seen[g] >= MIN_NGRAM_REPEATS {
                covered[i..i + 4].iter_mut().for_each(|c| *c = true);
            }
        }
        let n = covered.iter().filter(|c| **c).count();
        if n as f64 >= MAX_REPEATED_SHARE * words.len() as f64 {
            return true;
        }
    }
    let letters: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    periodic_run(&letters, MAX_PERIOD_CHARS, MIN_RUN_CHARS)
}

/// True when `items` holds a stretch of at least `min_len` items and [`MIN_REPEATS`]
/// periods in which each item equals the one `p` before it, for some `p <= max_period`.
fn periodic_run<T: PartialEq>(items: &[T], max_period: usize, min_len: usize) -> bool {
    for p in 1..=max_period.min(items.len() / MIN_REPEATS) {
        let mut run = 0; // items equal to the one p before, in a row
        for i in p..items.len() {
            if items[i] == items[i - p] {
                run += 1;
                // The stretch is the run plus the first period it repeats.
                let len = run + p;
                if len >= min_len && len >= MIN_REPEATS * p {
                    return true;
                }
            } else {
                run = 0;
            }
        }
    }
    false
}

/// A writing system, as far as the gate tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Script {
    /// Latin letters (English, French, Turkish, ...).
    Latin,
    /// Cyrillic (Russian, Ukrainian, ...).
    Cyrillic,
    /// Greek.
    Greek,
    /// Arabic (also Persian, Urdu).
    Arabic,
    /// Hebrew.
    Hebrew,
    /// Devanagari (Hindi, ...).
    Devanagari,
    /// Bengali.
    Bengali,
    /// Thai.
    Thai,
    /// Hangul (Korean).
    Hangul,
    /// Han characters and kana (Chinese, Japanese).
    Cjk,
}

impl Script {
    /// The script of a letter, or None for other characters (digits, punctuation,
    /// letters of scripts not listed).
    pub fn of(c: char) -> Option<Script> {
        if !c.is_alphabetic() {
            return None;
        }
        let u = c as u32;
        Some(match u {
            0x41..=0x24F | 0x1E00..=0x1EFF => Script::Latin,
            0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
            0x400..=0x52F => Script::Cyrillic,
            0x590..=0x5FF => Script::Hebrew,
            0x600..=0x6FF | 0x750..=0x77F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => Script::Arabic,
            0x900..=0x97F => Script::Devanagari,
            0x980..=0x9FF => Script::Bengali,
            0xE00..=0xE7F => Script::Thai,
            0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
            0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF => Script::Cjk,
            _ => return None,
        })
    }
}

/// The most frequent script among the letters of `text`, when it has at least
/// `min_letters` letters of known scripts.
pub fn dominant_script(text: &str, min_letters: usize) -> Option<Script> {
    let mut counts: BTreeMap<Script, usize> = BTreeMap::new();
    for s in text.chars().filter_map(Script::of) {
        *counts.entry(s).or_default() += 1;
    }
    if counts.values().sum::<usize>() < min_letters {
        return None;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
}

/// Letters a reply needs before its script is judged.
const MIN_SCRIPT_LETTERS: usize = 20;
/// Below this share of letters in the expected script, the reply is in the wrong script.
const MIN_SCRIPT_SHARE: f64 = 0.2;

/// True when at least [`MIN_SCRIPT_LETTERS`] letters are of known scripts and fewer than
/// 20% of them are in `want`.
fn wrong_script(text: &str, want: Script) -> bool {
    let (mut all, mut good) = (0usize, 0usize);
    for s in text.chars().filter_map(Script::of) {
        all += 1;
        good += usize::from(s == want);
    }
    all >= MIN_SCRIPT_LETTERS && (good as f64) < MIN_SCRIPT_SHARE * all as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_whitespace_are_rejected() {
        assert_eq!(check_text("", &Expected::default()), Some(Rejection::Empty));
        assert_eq!(
            check_text(" \n\t ", &Expected::default()),
            Some(Rejection::Empty)
        );
        assert_eq!(check_text("Yes.", &Expected::default()), None);
    }

    #[test]
    fn a_phrase_repeated_to_the_limit_is_degenerate() {
        let femme = format!("Je suis {}", "la Femme, ".repeat(20));
        assert!(repetitive(&femme));
        let tail = format!(
            "Paris is the capital of France and a large city with many museums. {}",
            "I love it. ".repeat(6)
        );
        assert!(repetitive(&tail));
        assert!(
            repetitive(&"好的".repeat(40)),
            "no spaces: letters are checked"
        );
        let loop_ = "The cat sat on the mat because the cat sat on the mat when the cat sat on \
                     the mat since the cat sat on the mat and";
        assert!(repetitive(loop_));
    }

    #[test]
    fn ordinary_replies_are_not_degenerate() {
        for ok in [
            "The sky looks blue because air molecules scatter short blue wavelengths of \
             sunlight more than red ones. At sunset the light crosses more air, so the blue is \
             scattered away and reds and oranges remain.",
            "1. Flour 2. Sugar 3. Eggs 4. Butter 5. Milk 6. Salt 7. Vanilla",
            "Very, very, very good!",
            "Le ciel est bleu parce que l'air diffuse davantage la lumière bleue du soleil.",
            "Ha ha, that's funny.",
            "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |",
        ] {
            assert_eq!(check_text(ok, &script(Script::Latin)), None, "{ok}");
        }
    }

    #[test]
    fn a_reply_in_the_wrong_script_is_rejected() {
        let catalog = Catalog::builtin();
        let ru = [Constraint::new(ConstraintKind::Language, "Russian")];
        let want = expected(&ru, &catalog, &users("How do bees make honey?"));
        assert_eq!(want, script(Script::Cyrillic));
        let english = "Bees collect nectar from flowers and store it in their hive as honey.";
        assert_eq!(check_text(english, &want), Some(Rejection::WrongScript));
        let russian = "Пчёлы собирают нектар с цветов и превращают его в мёд в улье.";
        assert_eq!(check_text(russian, &want), None);
        // No language asked: the user's script.
        let want = expected(&[], &catalog, &users("How do bees make honey?"));
        assert_eq!(want.script, Some(Script::Latin));
        assert_eq!(
            check_text(
                "蜜蜂从花中采集花蜜，并在蜂巢中把它变成蜂蜜，这需要很多时间。",
                &want
            ),
            Some(Rejection::WrongScript)
        );
        // Japanese mixes kana and Han: both count as its script.
        let ja = [Constraint::new(ConstraintKind::Language, "Japanese")];
        let want = expected(&ja, &catalog, &users("Hi"));
        assert_eq!(
            check_text(
                "ミツバチは花から蜜を集めて、巣の中で蜂蜜に変えます。",
                &want
            ),
            None
        );
        // Every language of the built-in catalog has a script the gate knows.
        for l in &catalog.languages {
            assert!(dominant_script(&l.native, 1).is_some(), "{}", l.name);
        }
        // Too few letters to judge.
        assert_eq!(check_text("OK!", &script(Script::Cyrillic)), None);
    }

    fn users(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    fn script(s: Script) -> Expected {
        Expected {
            script: Some(s),
            language: None,
            in_role: false,
        }
    }

    #[test]
    fn a_reply_out_of_the_role_is_rejected_only_where_there_is_a_role() {
        let catalog = Catalog::builtin();
        let user = users("What is your favorite hobby?");
        let disclaimer = "As an AI language model, I don't have personal preferences. \
                          However, you might enjoy juggling.";
        let hobby = [Constraint::new(ConstraintKind::Hobby, "Juggling")];
        let want = expected(&hobby, &catalog, &user);
        assert!(want.in_role);
        assert_eq!(
            check_text(disclaimer, &want),
            Some(Rejection::BreaksCharacter)
        );
        assert_eq!(check_text("Juggling, every evening.", &want), None);
        // A language or format instruction gives no role: the same reply is kept.
        let french = [Constraint::new(ConstraintKind::Language, "French")];
        let want = expected(&french, &catalog, &user);
        assert!(!want.in_role);
        assert_eq!(check_text(disclaimer, &want), None);
        assert_eq!(Rejection::BreaksCharacter.as_str(), "breaks_character");
    }

    #[test]
    fn with_no_language_asked_the_users_language_is_expected() {
        let catalog = Catalog::builtin();
        let user = "Why do cats purr, and does it always mean that they are happy?";
        let want = expected(&[], &catalog, &users(user));
        assert_eq!(want.language, Some(whatlang::Lang::Eng));
        let spanish = "Los gatos ronronean cuando están tranquilos, pero también cuando \
                       sienten dolor o miedo, así que no siempre significa que estén felices.";
        assert_eq!(check_text(spanish, &want), Some(Rejection::WrongLanguage));
        let english = "Cats purr when they are content, but also when they are in pain or \
                       afraid, so it does not always mean they are happy.";
        assert_eq!(check_text(english, &want), None);
        // Too short to tell: kept.
        assert_eq!(check_text("Sí, claro.", &want), None);
        // A language asked for: the scorer judges it, not this check.
        let fr = [Constraint::new(ConstraintKind::Language, "French")];
        let want = expected(&fr, &catalog, &users(user));
        assert_eq!(want.language, None);
        assert_eq!(check_text(spanish, &want), None);
        // A user message too short to tell: no language expected.
        assert_eq!(expected(&[], &catalog, &users("Hi there!")).language, None);
        // One short question is not enough, the dialogue's questions together are.
        let one = users("What is the difference between weather and climate?");
        assert_eq!(expected(&[], &catalog, &one).language, None);
        let all = [
            one[0].clone(),
            "How do bees make honey, and why do they need so much of it?".into(),
        ];
        assert_eq!(
            expected(&[], &catalog, &all).language,
            Some(whatlang::Lang::Eng)
        );
    }

    #[test]
    fn counts_add_up_and_serialize_by_name() {
        let mut a = GateCounts {
            dialogues: 2,
            kept: 1,
            ..Default::default()
        };
        a.dropped.insert(Rejection::Cut, 1);
        a.candidates_rejected.insert(Rejection::Empty, 3);
        let mut total = GateCounts::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(
            (total.dialogues, total.kept, total.dropped_total()),
            (4, 2, 2)
        );
        let v = serde_json::to_value(&total).unwrap();
        assert_eq!(v["candidates_rejected"]["empty"], 6);
        assert_eq!(serde_json::from_value::<GateCounts>(v).unwrap(), total);
    }

    #[test]
    fn cut_mode_names_round_trip() {
        for &m in CutMode::ALL {
            assert_eq!(m.to_string().parse::<CutMode>(), Ok(m));
        }
    }
}
