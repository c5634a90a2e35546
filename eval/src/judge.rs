//! An optional judge model for the constraints code cannot check on every turn:
//! persona, hobby and figure. Each (turn, constraint) becomes one yes/no question to the
//! judge; its verdicts are rows of their own, under the model name `MODEL (judge)`, so
//! reports show them apart from the programmatic checks.

use crate::checks::{Check, Undecided, Verdict};
use crate::protocol::ScoredTurn;
use gatt::backend::{ChatBackend, Request, SamplingParams};
use gatt::catalog::Catalog;
use gatt::seed::Stream;
use gatt::{ConstraintKind, Dialogue, Error, Message, Result, Role};

/// Evidence of a judge reply that was neither yes nor no (counted, never a pass).
pub const NEITHER: &str = "judge answered neither yes nor no";

const SYSTEM: &str = "You are a strict evaluator of chat assistants. \
Answer with a single word: yes or no.";

/// Tokens a judge may write for its verdict ("yes" or "no" is one or two).
const VERDICT_TOKENS: usize = 4;

/// How a judge's verdicts are sampled: greedy, one candidate, a few tokens.
pub fn verdict_params() -> SamplingParams {
    SamplingParams {
        max_new_tokens: VERDICT_TOKENS,
        temperature: 0.0,
        n: 1,
        ..SamplingParams::default()
    }
}

/// The kinds a judge decides on every turn.
pub fn judged_kind(kind: &ConstraintKind) -> bool {
    matches!(
        kind,
        ConstraintKind::Persona | ConstraintKind::Hobby | ConstraintKind::Figure
    )
}

fn question(
    kind: &ConstraintKind,
    value: &str,
    instruction: &str,
    user: &str,
    reply: &str,
) -> String {
    let what = match kind {
        ConstraintKind::Figure => format!("speak as {value}"),
        ConstraintKind::Hobby => format!("have {value} as its favorite hobby"),
        _ => format!("keep this persona: {value}"),
    };
    format!(
        "The assistant was told: \"{instruction}\"\n\nUser: {user}\nAssistant: {reply}\n\n\
         Is this reply consistent with the instruction to {what}? Answer yes or no."
    )
}

/// Reads yes/no from the first word of a judge's reply.
pub fn parse_verdict(reply: &str) -> Verdict {
    let first = reply
        .trim()
        .split(|c: char| !c.is_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_lowercase();
    match first.as_str() {
        "yes" => Verdict::Pass,
        "no" => Verdict::Fail,
        _ => Verdict::Undetermined,
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
                let value = catalog.value_text(c);
                let q = question(&c.kind, &value, &d.instruction, &m.content, &reply.content);
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
                let request = Request::new(
                    vec![Message::system(SYSTEM), Message::user(q)],
                    // Stream: JudgeRequest (parent: 0, index: the question).
                    gatt::seed::derive(0, Stream::JudgeRequest, pending.len() as u64),
                );
                pending.push((row, request));
            }
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for chunk in pending.chunks(judge.preferred_batch().max(1)) {
        let requests: Vec<Request> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let replies = judge.generate(&requests, params)?;
        if replies.len() != requests.len() {
            return Err(Error::runtime(format!(
                "judge {}: {} replies for {} questions; no verdict is guessed",
                judge.describe(),
                replies.len(),
                requests.len()
            )));
        }
        for ((row, _), reply) in chunk.iter().zip(replies) {
            let text = reply.into_iter().next().map(|r| r.text).unwrap_or_default();
            let head: String = text.chars().take(60).collect();
            let check = match parse_verdict(&text) {
                Verdict::Pass => Check::pass(format!("judge: {head:?}")),
                Verdict::Fail => Check::fail(format!("judge: {head:?}")),
                Verdict::Undetermined => {
                    Check::undetermined(Undecided::JudgeUnclear, format!("{NEITHER}: {head:?}"))
                }
            };
            out.push(ScoredTurn {
                verdict: check.verdict,
                evidence: check.evidence,
                undecided: check.undecided,
                ..row.clone()
            });
        }
        progress(out.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::backend::Reply;

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
