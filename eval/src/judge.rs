//! An optional judge model for the constraints code cannot check on every turn:
//! persona, hobby and figure. Each (turn, constraint) becomes one yes/no question to the
//! judge; its verdicts are rows of their own, under the model name `MODEL (judge)`, so
//! reports show them apart from the programmatic checks. The questions and how answers
//! are read are [`gatt::judge`]'s, shared with the generator's candidate scorer.

use crate::checks::{Check, Undecided, Verdict};
use crate::protocol::ScoredTurn;
use gatt::backend::{ChatBackend, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::judge::{ask, request, Answer};
use gatt::seed::Stream;
use gatt::{Dialogue, Result, Role};

pub use gatt::judge::{judged_kind, verdict_params, NEITHER};

/// Reads yes/no from the first word of a judge's reply (see [`gatt::judge::parse`]).
pub fn parse_verdict(reply: &str) -> Verdict {
    match gatt::judge::parse(reply) {
        Answer::Yes => Verdict::Pass,
        Answer::No => Verdict::Fail,
        Answer::Neither => Verdict::Undetermined,
    }
}

/// Asks `judge` about every answered turn of `dialogues` for each judged constraint, in
/// batches of its preferred size; `progress` gets the number of verdicts so far. Each
/// question has its own seed, so a sampling judge repeats its verdicts.
///
/// # Errors
///
/// The judge backend's error.
pub fn judge_dialogues(
    judge: &dyn ChatBackend,
    dialogues: &[Dialogue],
    catalog: &Catalog,
    params: &SamplingParams,
    progress: &dyn Fn(usize),
) -> Result<Vec<ScoredTurn>> {
    let mut pending: Vec<(ScoredTurn, Request)> = Vec::new();
    for d in dialogues {
        let model = d
            .meta
            .model
            .as_deref()
            .unwrap_or(crate::protocol::UNKNOWN_MODEL);
        let mut turn = 0;
        for (i, m) in d.messages.iter().enumerate() {
            if m.role != Role::User {
                continue;
            }
            turn += 1;
            let Some(reply) = d.messages.get(i + 1).filter(|r| r.role == Role::Assistant) else {
                continue;
            };
            for c in d.constraints.iter().filter(|c| judged_kind(&c.kind)) {
                let row = ScoredTurn {
                    model: format!("{model} (judge)"),
                    dialogue: d.id.clone(),
                    turn,
                    kind: c.kind.clone(),
                    value: c.value.clone(),
                    // Set from the judge's reply below.
                    verdict: Verdict::Undetermined,
                    evidence: String::new(),
                    undecided: None,
                    judge: true,
                };
                // Stream: JudgeRequest (parent: 0, index: the question).
                let seed = gatt::seed::derive(0, Stream::JudgeRequest, pending.len() as u64);
                let q = request(c, catalog, &d.instruction, &m.content, &reply.content, seed);
                pending.push((row, q));
            }
        }
    }
    let requests: Vec<Request> = pending.iter().map(|(_, r)| r.clone()).collect();
    let rulings = ask(judge, &requests, params, progress)?;
    let out = pending
        .into_iter()
        .zip(rulings)
        .map(|((row, _), ruling)| {
            let head = ruling.head;
            let check = match ruling.answer {
                Answer::Yes => Check::pass(format!("judge: {head:?}")),
                Answer::No => Check::fail(format!("judge: {head:?}")),
                Answer::Neither => {
                    Check::undetermined(Undecided::JudgeUnclear, format!("{NEITHER}: {head:?}"))
                }
            };
            ScoredTurn {
                verdict: check.verdict,
                evidence: check.evidence,
                undecided: check.undecided,
                ..row
            }
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::backend::Reply;
    use gatt::ConstraintKind;

    #[test]
    fn verdicts_come_from_the_first_word() {
        assert_eq!(parse_verdict("Yes."), Verdict::Pass);
        assert_eq!(parse_verdict("  no, it does not"), Verdict::Fail);
        assert_eq!(parse_verdict("**YES**"), Verdict::Pass);
        assert_eq!(parse_verdict("Maybe"), Verdict::Undetermined);
        assert_eq!(parse_verdict(""), Verdict::Undetermined);
        assert_eq!(parse_verdict("Nope"), Verdict::Undetermined);
    }

    /// Answers "yes" when the question mentions Paris, "no" otherwise, and rambles
    /// for questions about hobbies.
    struct Scripted;
    impl ChatBackend for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn generate(&self, requests: &[Request], _: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
            Ok(requests
                .iter()
                .map(|r| {
                    let q = &r.messages[1].content;
                    let text = if q.contains("as its favorite hobby") {
                        "Well, hard to say"
                    } else if q.contains("Paris") {
                        "Yes"
                    } else {
                        "No."
                    };
                    vec![Reply {
                        text: text.into(),
                        prompt_tokens: 0,
                        completion_tokens: 1,
                        finished: true,
                    }]
                })
                .collect())
        }
        fn preferred_batch(&self) -> usize {
            2
        }
    }

    #[test]
    fn every_turn_and_judged_constraint_gets_a_row_apart_from_code_checks() {
        let catalog = Catalog::builtin();
        let d: Dialogue = serde_json::from_value(serde_json::json!({
            "id": "d1",
            "instruction": "Act as Napoleon Bonaparte. Your favorite hobby is chess. Reply in French.",
            "constraints": [
                {"kind": "figure", "value": "Napoleon Bonaparte"},
                {"kind": "hobby", "value": "Chess"},
                {"kind": "language", "value": "French"}
            ],
            "messages": [
                {"role": "system", "content": "Act as Napoleon Bonaparte."},
                {"role": "user", "content": "Where do you live?"},
                {"role": "assistant", "content": "In Paris, of course."},
                {"role": "user", "content": "And now?"},
                {"role": "assistant", "content": "On an island."},
                {"role": "user", "content": "Unanswered"}
            ],
            "meta": {"model": "m"}
        }))
        .unwrap();
        let rows = judge_dialogues(
            &Scripted,
            &[d],
            &catalog,
            &SamplingParams::default(),
            &|_| {},
        )
        .unwrap();
        // 2 answered turns x 2 judged kinds (language is left to code).
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.judge && r.model == "m (judge)"));
        let figure: Vec<Verdict> = rows
            .iter()
            .filter(|r| r.kind == ConstraintKind::Figure)
            .map(|r| r.verdict)
            .collect();
        assert_eq!(figure, vec![Verdict::Pass, Verdict::Fail]);
        assert!(rows
            .iter()
            .filter(|r| r.kind == ConstraintKind::Hobby)
            .all(|r| r.verdict == Verdict::Undetermined && r.evidence.starts_with(NEITHER)));
        assert!(rows.iter().all(|r| r.undecided
            == (r.verdict == Verdict::Undetermined).then_some(Undecided::JudgeUnclear)));
    }
}
