//! Scoring a finished dialogue: one row per (turn, constraint).
//!
//! Works on any dialogue with constraints: the protocol's own (which records its probe
//! turns in `meta.probe_turns` and `meta.probe_kinds`), and generated training data,
//! where the instruction sits in the system message or is attached to user turns and no
//! probe turns are recorded. There a turn counts as a probe for a kind when its user
//! message, without the instruction, is one of the catalog's probe questions for it.

use crate::checks::{check, user_language, Undecided, Verdict};
use gatt::catalog::Catalog;
use gatt::{ConstraintKind, Dialogue, DialogueMeta, Role};
use serde::{Deserialize, Serialize};

/// Model name used when a dialogue's `meta.model` is missing.
pub const UNKNOWN_MODEL: &str = "unknown";

/// The verdict on one constraint at one turn of one dialogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredTurn {
    /// The model that wrote the reply (`meta.model`, else [`UNKNOWN_MODEL`]);
    /// `MODEL (judge)` on a judge's rows.
    pub model: String,
    /// The dialogue's id.
    pub dialogue: String,
    /// 1-based: the n-th user message and the reply to it.
    pub turn: usize,
    /// The constraint's kind.
    pub kind: ConstraintKind,
    /// The constraint's value: a catalog name (`French`, `Chess`) or format rule id.
    pub value: String,
    /// The outcome of the check.
    pub verdict: Verdict,
    /// Its reason ([`crate::Check::evidence`]).
    pub evidence: String,
    /// Why the verdict is Undetermined; `None` exactly when it is Pass or Fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided: Option<Undecided>,
    /// True when the verdict came from a judge model rather than code (always false here).
    pub judge: bool,
}

/// Scores every answered turn of `d` against each of its constraints. A final user
/// message without a reply is not scored.
///
/// A dialogue with no constraints and no instruction (`gatt eval --no-instruction`, the
/// control for collateral damage) is scored instead for answering in the user's
/// language: one row of kind [`user_language::KIND`] per turn. A system message counts
/// as an instruction ("Always answer in French." there is one even without the
/// `instruction` field): such a dialogue without constraints gives no rows.
pub fn score_dialogue(d: &Dialogue, catalog: &Catalog) -> Vec<ScoredTurn> {
    let model = d.meta.model.as_deref().unwrap_or(UNKNOWN_MODEL);
    if d.constraints.is_empty() && !has_instruction(d) {
        return score_user_language(d, model);
    }
    let recorded = RecordedProbes::from_meta(&d.meta);
    let mut rows = Vec::new();
    let mut turn = 0;
    for (i, message) in d.messages.iter().enumerate() {
        if message.role != Role::User {
            continue;
        }
        turn += 1;
        let Some(reply) = d.messages.get(i + 1).filter(|m| m.role == Role::Assistant) else {
            continue;
        };
        let question = without_instruction(&message.content, &d.instruction);
        for c in &d.constraints {
            let probe = recorded.asked(turn, &c.kind) || is_probe(question, &c.kind, catalog);
            let result = check(c, &d.constraints, &reply.content, catalog, probe);
            rows.push(ScoredTurn {
                model: model.to_string(),
                dialogue: d.id.clone(),
                turn,
                kind: c.kind.clone(),
                value: c.value.clone(),
                verdict: result.verdict,
                evidence: result.evidence,
                undecided: result.undecided,
                judge: false,
            });
        }
    }
    rows
}

/// True when `d` carries an instruction: its `instruction` field, or a system message
/// with text.
pub fn has_instruction(d: &Dialogue) -> bool {
    !d.instruction.trim().is_empty()
        || d.messages
            .iter()
            .any(|m| m.role == Role::System && !m.content.trim().is_empty())
}

/// One [`user_language::KIND`] row per answered turn of an instruction-free dialogue.
fn score_user_language(d: &Dialogue, model: &str) -> Vec<ScoredTurn> {
    let users: Vec<&str> = d
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    let lang = user_language::detect(&users.join("\n"));
    let value = lang.as_ref().map_or("unknown", |l| l.name.as_str());
    answered_turns(d)
        .map(|(turn, reply)| {
            let result = user_language::check(lang.as_ref(), reply);
            ScoredTurn {
                model: model.to_string(),
                dialogue: d.id.clone(),
                turn,
                kind: ConstraintKind::Other(user_language::KIND.into()),
                value: value.to_string(),
                verdict: result.verdict,
                evidence: result.evidence,
                undecided: result.undecided,
                judge: false,
            }
        })
        .collect()
}

/// (turn, reply) of every user message that has a reply; turns are 1-based.
fn answered_turns(d: &Dialogue) -> impl Iterator<Item = (usize, &str)> {
    let user_turns = d
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User);
    user_turns.enumerate().filter_map(|(t, (i, _))| {
        let reply = d
            .messages
            .get(i + 1)
            .filter(|m| m.role == Role::Assistant)?;
        Some((t + 1, reply.content.as_str()))
    })
}

/// The user's own words: the message with the instruction (if attached) taken out.
fn without_instruction<'a>(message: &'a str, instruction: &str) -> &'a str {
    let instruction = instruction.trim();
    if instruction.is_empty() {
        return message.trim();
    }
    let m = message.trim();
    m.strip_prefix(instruction)
        .or_else(|| m.strip_suffix(instruction))
        .unwrap_or(m)
        .trim()
}

fn is_probe(question: &str, kind: &ConstraintKind, catalog: &Catalog) -> bool {
    catalog
        .probes
        .of(kind)
        .iter()
        .any(|p| p.trim().eq_ignore_ascii_case(question))
}

/// Probe turns as the protocol records them in `meta`.
struct RecordedProbes {
    /// (turn, kind asked about; `None` when the record does not say).
    turns: Vec<(usize, Option<ConstraintKind>)>,
}

impl RecordedProbes {
    /// Reads `probe_turns` (turn numbers) and `probe_kinds`, when recorded; reading the
    /// record checked that there are as many kinds as turns.
    fn from_meta(meta: &DialogueMeta) -> Self {
        let turns = meta.probe_turns.iter().flatten().copied();
        let turns = match &meta.probe_kinds {
            Some(kinds) => turns.zip(kinds.iter().cloned().map(Some)).collect(),
            None => turns.map(|t| (t, None)).collect(),
        };
        RecordedProbes { turns }
    }

    fn asked(&self, turn: usize, kind: &ConstraintKind) -> bool {
        self.turns
            .iter()
            .any(|(t, k)| *t == turn && k.as_ref().is_none_or(|k| k == kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::{Constraint, Message};

    fn napoleon(messages: Vec<Message>) -> Dialogue {
        let mut d = Dialogue::new("d1", messages);
        d.instruction = "Always act as Napoleon Bonaparte from now on.".into();
        d.constraints = vec![
            Constraint::new(ConstraintKind::Figure, "Napoleon Bonaparte"),
            Constraint::new(ConstraintKind::Hobby, "Chess"),
        ];
        d
    }

    #[test]
    fn probe_questions_are_recognised_without_meta() {
        let d = napoleon(vec![
            Message::user("Always act as Napoleon Bonaparte from now on. Why is the sky blue?"),
            Message::assistant("Rayleigh scattering, mon ami."),
            Message::user("What is your name? Always act as Napoleon Bonaparte from now on."),
            Message::assistant("I am Napoléon."),
            Message::user("What is your name?"),
        ]);
        let rows = score_dialogue(&d, &Catalog::builtin());
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.turn, r.kind.as_str(), r.verdict))
            .collect();
        assert_eq!(
            got,
            [
                (1, "figure", Verdict::Undetermined),
                (1, "hobby", Verdict::Undetermined),
                (2, "figure", Verdict::Pass),
                (2, "hobby", Verdict::Undetermined),
            ]
        );
        assert!(rows.iter().all(|r| r.model == UNKNOWN_MODEL && !r.judge));
    }

    #[test]
    fn instruction_free_dialogues_are_scored_for_the_users_language() {
        let mut d = Dialogue::new(
            "c1",
            vec![
                Message::user("Why is the sky blue? Please explain it simply."),
                Message::assistant("Air scatters blue sunlight more than the other colours."),
                Message::user("And why are sunsets red and orange in the evening?"),
                Message::assistant("Le soleil est bas, et la lumière traverse plus d'air."),
                Message::user("Thanks!"),
            ],
        );
        d.meta.model = Some("tuned".into());
        let rows = score_dialogue(&d, &Catalog::builtin());
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.turn, r.kind.as_str(), r.value.as_str(), r.verdict))
            .collect();
        assert_eq!(
            got,
            [
                (1, "user_language", "English", Verdict::Pass),
                (2, "user_language", "English", Verdict::Fail),
            ]
        );
        // An instruction without constraints is not the control: nothing to score.
        let mut with_field = d.clone();
        with_field.instruction = "Always answer in French.".into();
        assert!(score_dialogue(&with_field, &Catalog::builtin()).is_empty());
        // Nor is a system message that holds one, with no `instruction` field.
        let mut with_system = d.clone();
        with_system
            .messages
            .insert(0, Message::system("Always answer in French."));
        assert!(score_dialogue(&with_system, &Catalog::builtin()).is_empty());
        // An empty system message is no instruction.
        let mut empty_system = d;
        empty_system.messages.insert(0, Message::system(" "));
        assert_eq!(score_dialogue(&empty_system, &Catalog::builtin()).len(), 2);
    }

    #[test]
    fn recorded_probe_turns_and_kinds_decide() {
        let mut d = napoleon(vec![
            Message::system("Always act as Napoleon Bonaparte from now on."),
            Message::user("Hello"),
            Message::assistant("Bonjour. I play chess."),
        ]);
        d.meta.model = Some("m".into());
        d.meta.probe_turns = Some(vec![1]);
        d.meta.probe_kinds = Some(vec![ConstraintKind::Hobby]);
        let rows = score_dialogue(&d, &Catalog::builtin());
        assert_eq!(rows[0].verdict, Verdict::Undetermined); // figure: not asked
        assert_eq!(rows[1].verdict, Verdict::Pass); // hobby: asked, chess named
        assert_eq!(rows[1].model, "m");

        d.meta.probe_kinds = None;
        let rows = score_dialogue(&d, &Catalog::builtin());
        assert_eq!(rows[0].verdict, Verdict::Fail); // without kinds, every kind was asked
    }

    #[test]
    fn a_hobby_named_in_the_instructed_language_is_kept() {
        let mut d = Dialogue::new(
            "d1",
            vec![
                Message::system("Always answer in Italian. You enjoy Robotics."),
                Message::user("What is your favorite hobby?"),
                Message::assistant("Il mio passatempo preferito è la robotica."),
            ],
        );
        d.constraints = vec![
            Constraint::new(ConstraintKind::Language, "Italian"),
            Constraint::new(ConstraintKind::Hobby, "Robotics"),
        ];
        let rows = score_dialogue(&d, &Catalog::builtin());
        assert_eq!(rows[1].kind, ConstraintKind::Hobby);
        assert_eq!(rows[1].verdict, Verdict::Pass, "{}", rows[1].evidence);
        // The same reply in a dialogue with no language constraint: English keywords only.
        d.constraints.remove(0);
        let rows = score_dialogue(&d, &Catalog::builtin());
        assert_eq!(rows[0].verdict, Verdict::Fail, "{}", rows[0].evidence);
    }
}
