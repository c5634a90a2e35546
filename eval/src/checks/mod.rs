//! Programmatic adherence checks: does one reply respect one constraint?
//!
//! Every check answers Pass, Fail or Undetermined, and says why in `evidence`.
//! Undetermined is never counted as a pass: it means the reply does not let code decide
//! (too short to detect a language, a hobby on a turn where nobody asked about hobbies)
//! or the constraint itself cannot be checked (an unknown kind or catalog value); which
//! of these is an [`Undecided`] value, never a text to parse.
//!
//! One module per constraint kind; [`check`] dispatches.

mod figure;
mod format;
mod function_words;
mod hobby;
mod language;
mod persona;
pub mod sentences;
pub mod text;
pub mod user_language;

use gatt::catalog::{Catalog, Language};
use gatt::{Constraint, ConstraintKind};
use serde::{Deserialize, Serialize};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The reply keeps the constraint.
    Pass,
    /// The reply breaks it.
    Fail,
    /// Code cannot decide ([`Undecided`] says why); never counted as a pass.
    Undetermined,
}

impl Verdict {
    /// The name as serialized: `pass`, `fail` or `undetermined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Undetermined => "undetermined",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a check is [`Verdict::Undetermined`]: what a report counts apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undecided {
    /// The reply does not let code decide: too little prose to detect a language, a
    /// detection too unsure, no prose outside code, no cased letters.
    Unclear,
    /// The turn did not ask about the constraint's kind (hobby, figure, persona only
    /// show when asked).
    NotAProbe,
    /// The constraint itself cannot be checked: an unknown kind, a value missing from
    /// the catalog, a bad format parameter. The data is at fault, not the reply; reports
    /// count these as problems.
    Problem,
    /// A judge model answered neither yes nor no.
    JudgeUnclear,
}

/// A verdict and the reason for it, written for a person reading a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The outcome.
    pub verdict: Verdict,
    /// What was found (`3 sentences`, `ends with "..."`) or why nothing could be decided.
    pub evidence: String,
    /// Why the verdict is Undetermined; `None` exactly when it is Pass or Fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided: Option<Undecided>,
}

impl Check {
    /// A pass, with its evidence.
    pub fn pass(evidence: impl Into<String>) -> Self {
        Check {
            verdict: Verdict::Pass,
            evidence: evidence.into(),
            undecided: None,
        }
    }

    /// A failure, with its evidence.
    pub fn fail(evidence: impl Into<String>) -> Self {
        Check {
            verdict: Verdict::Fail,
            evidence: evidence.into(),
            undecided: None,
        }
    }

    /// An undetermined verdict, with its reason and evidence.
    pub fn undetermined(why: Undecided, evidence: impl Into<String>) -> Self {
        Check {
            verdict: Verdict::Undetermined,
            evidence: evidence.into(),
            undecided: Some(why),
        }
    }

    /// True when the constraint could not be checked at all ([`Undecided::Problem`]).
    pub fn is_problem(&self) -> bool {
        self.undecided == Some(Undecided::Problem)
    }
}

/// Evidence of a turn that did not ask about the constraint's kind.
pub const NOT_A_PROBE: &str = "not a probe turn";
/// Evidence of an empty reply, which fails every constraint.
pub const EMPTY_REPLY: &str = "empty reply";

/// A check for a constraint the evaluator cannot check ([`Undecided::Problem`]); the
/// evidence reads `cannot check: REASON`.
pub(crate) fn problem(reason: impl std::fmt::Display) -> Check {
    Check::undetermined(Undecided::Problem, format!("cannot check: {reason}"))
}

/// Checks one reply against one constraint `c` of a dialogue whose instruction holds
/// the constraints `all` (only its language is read here; `&[]` when there is none). `probe`: true when this turn's user message was a probe
/// question for this constraint's kind.
///
/// Hobbies, public figures and personas only show when the user asks about them (the
/// paper probes with "What is your name?"), so they are decided on probe turns only.
/// Language and format rules hold for every reply and are decided on every turn. A
/// hobby's or persona's keywords are looked for in English and in the language `all` asks
/// for, if any ("Always answer in Italian. You enjoy Robotics." is kept by "la robotica").
pub fn check(
    c: &Constraint,
    all: &[Constraint],
    reply: &str,
    catalog: &Catalog,
    probe: bool,
) -> Check {
    let unknown = || problem(format!("{} `{}` is not in the catalog", c.kind, c.value));
    match &c.kind {
        ConstraintKind::Other(kind) => problem(format!("unknown constraint kind `{kind}`")),
        ConstraintKind::Language => match catalog.language(&c.value) {
            Some(lang) => decide(reply, true, || language::check(lang, reply)),
            None => unknown(),
        },
        ConstraintKind::Format => match catalog.format(&c.value) {
            Some(rule) => decide(reply, true, || {
                format::check(&rule.id, c.param.as_deref(), reply)
            }),
            None => problem(format!("format rule `{}` is not in the catalog", c.value)),
        },
        ConstraintKind::Figure => match catalog.figure(&c.value) {
            Some(figure) => decide(reply, probe, || figure::check(figure, reply)),
            None => unknown(),
        },
        ConstraintKind::Hobby => match catalog.hobby(&c.value) {
            Some(hobby) => decide(reply, probe, || {
                hobby::check(hobby, instructed_language(all, catalog), reply)
            }),
            None => unknown(),
        },
        ConstraintKind::Persona => match catalog.persona(&c.value) {
            Some(persona) => decide(reply, probe, || {
                persona::check(persona, instructed_language(all, catalog), reply)
            }),
            None => unknown(),
        },
    }
}

/// The catalog language the dialogue's instruction asks for: its first language
/// constraint that is in the catalog.
fn instructed_language<'a>(all: &[Constraint], catalog: &'a Catalog) -> Option<&'a Language> {
    all.iter()
        .filter(|c| c.kind == ConstraintKind::Language)
        .find_map(|c| catalog.language(&c.value))
}

/// The checks every known constraint shares: an empty reply fails (the model broke down,
/// whatever it was asked), a turn that did not ask is undetermined.
fn decide(reply: &str, asked: bool, check: impl FnOnce() -> Check) -> Check {
    if reply.trim().is_empty() {
        Check::fail(EMPTY_REPLY)
    } else if !asked {
        Check::undetermined(Undecided::NotAProbe, NOT_A_PROBE)
    } else {
        check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: &str, value: &str) -> Constraint {
        Constraint::new(ConstraintKind::from(kind.to_string()), value)
    }

    #[test]
    fn unknown_kinds_and_values_are_problems() {
        let cat = Catalog::builtin();
        let k = check(&c("mood", "happy"), &[], "I am happy", &cat, true);
        assert_eq!(k.verdict, Verdict::Undetermined);
        assert!(k.is_problem(), "{}", k.evidence);
        let v = check(
            &c("hobby", "Underwater basket weaving"),
            &[],
            "x",
            &cat,
            true,
        );
        assert_eq!(v.verdict, Verdict::Undetermined);
        assert!(v.is_problem(), "{}", v.evidence);
    }

    #[test]
    fn empty_reply_fails_and_non_probe_turns_are_undetermined() {
        let cat = Catalog::builtin();
        let tennis = c("hobby", "Tennis");
        assert_eq!(
            check(&tennis, &[], "  \n", &cat, false),
            Check::fail(EMPTY_REPLY)
        );
        let k = check(&tennis, &[], "I love tennis.", &cat, false);
        assert_eq!(k, Check::undetermined(Undecided::NotAProbe, NOT_A_PROBE));
        assert!(!k.is_problem());
        assert_eq!(
            check(&tennis, &[], "I love tennis.", &cat, true).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn verdicts_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Verdict::Undetermined).unwrap(),
            "\"undetermined\""
        );
    }
}
