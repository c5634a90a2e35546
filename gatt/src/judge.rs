//! A judge model's yes/no questions on the constraints code cannot check on every turn:
//! persona, hobby and figure (code decides them on probe turns only).
//!
//! One question per (reply, constraint): the instruction, the user message and the reply,
//! then "Is this reply consistent with the instruction to ...? Answer yes or no.", asked
//! greedily for a few tokens; the first word of the answer is the verdict. The evaluator
//! (`gatt eval --judge-model`) asks it about every turn of a dialogue, the generator
//! (`gatt synth --judge-model`) about every candidate reply; both ask exactly these
//! questions through [`ask`], so a verdict means the same in both.
//!
//! It lives in the core crate because both crates use it and the generator must not
//! depend on the evaluator; it needs only the [`ChatBackend`] trait and the catalog.

use crate::backend::{ChatBackend, Request, SamplingParams};
use crate::catalog::Catalog;
use crate::{Constraint, ConstraintKind, Error, Message, Result};

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

/// The kinds a judge decides on every turn: persona, hobby and figure.
pub fn judged_kind(kind: &ConstraintKind) -> bool {
    matches!(
        kind,
        ConstraintKind::Persona | ConstraintKind::Hobby | ConstraintKind::Figure
    )
}

/// A judge's answer, read from the first word of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// "yes": the reply keeps the constraint.
    Yes,
    /// "no": it does not.
    No,
    /// Anything else (never a pass).
    Neither,
}

impl Answer {
    /// `Some(true)` for yes, `Some(false)` for no, `None` for neither.
    pub fn decided(self) -> Option<bool> {
        match self {
            Answer::Yes => Some(true),
            Answer::No => Some(false),
            Answer::Neither => None,
        }
    }
}

/// One verdict: the answer and the first 60 characters of the judge's reply (evidence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    /// Yes, no or neither.
    pub answer: Answer,
    /// The head of the judge's reply.
    pub head: String,
}

/// Reads yes/no from the first word of a judge's reply ("**YES**" is yes, "Nope" is
/// neither).
pub fn parse(reply: &str) -> Answer {
    let first = reply
        .trim()
        .split(|c: char| !c.is_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_lowercase();
    match first.as_str() {
        "yes" => Answer::Yes,
        "no" => Answer::No,
        _ => Answer::Neither,
    }
}

/// The question whether `reply` (to `user`, under `instruction`) keeps `c`, as a request
/// with `seed`. `c` should be of a [`judged_kind`]; other kinds are asked as personas.
pub fn request(
    c: &Constraint,
    catalog: &Catalog,
    instruction: &str,
    user: &str,
    reply: &str,
    seed: u64,
) -> Request {
    let value = catalog.value_text(c);
    let what = match c.kind {
        ConstraintKind::Figure => format!("speak as {value}"),
        ConstraintKind::Hobby => format!("have {value} as its favorite hobby"),
        _ => format!("keep this persona: {value}"),
    };
    let q = format!(
        "The assistant was told: \"{instruction}\"\n\nUser: {user}\nAssistant: {reply}\n\n\
         Is this reply consistent with the instruction to {what}? Answer yes or no."
    );
    Request::new(vec![Message::system(SYSTEM), Message::user(q)], seed)
}

/// Asks `judge` every question of `requests`, in batches of its preferred size, with
/// `params` (usually [`verdict_params`]); `progress` gets the number of verdicts so far.
/// Returns one ruling per request, in order.
///
/// # Errors
///
/// The judge backend's error, or a runtime error when it returns another number of
/// replies than questions (no verdict is guessed).
pub fn ask(
    judge: &dyn ChatBackend,
    requests: &[Request],
    params: &SamplingParams,
    progress: &dyn Fn(usize),
) -> Result<Vec<Ruling>> {
    let mut out = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(judge.preferred_batch().max(1)) {
        let replies = judge.generate(chunk, params)?;
        if replies.len() != chunk.len() {
            return Err(Error::runtime(format!(
                "judge {}: {} replies for {} questions; no verdict is guessed",
                judge.describe(),
                replies.len(),
                chunk.len()
            )));
        }
        for reply in replies {
            let text = reply.into_iter().next().map(|r| r.text).unwrap_or_default();
            out.push(Ruling {
                answer: parse(&text),
                head: text.chars().take(60).collect(),
            });
        }
        progress(out.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Reply;

    #[test]
    fn verdicts_come_from_the_first_word() {
        assert_eq!(parse("Yes."), Answer::Yes);
        assert_eq!(parse("  no, it does not"), Answer::No);
        assert_eq!(parse("**YES**"), Answer::Yes);
        assert_eq!(parse("Maybe"), Answer::Neither);
        assert_eq!(parse(""), Answer::Neither);
        assert_eq!(parse("Nope"), Answer::Neither);
        assert_eq!(Answer::No.decided(), Some(false));
    }

    /// Echoes the question's last line, two questions at a time.
    struct Echo;
    impl ChatBackend for Echo {
        fn describe(&self) -> String {
            "echo".into()
        }
        fn generate(&self, requests: &[Request], _: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
            Ok(requests
                .iter()
                .map(|r| {
                    let q = &r.messages[1].content;
                    let text = if q.contains("speak as Napoleon") {
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
    fn questions_name_the_constraint_and_rulings_keep_the_order() {
        let catalog = Catalog::builtin();
        let figure = Constraint::new(ConstraintKind::Figure, "Napoleon Bonaparte");
        let hobby = Constraint::new(ConstraintKind::Hobby, "Chess");
        let r = request(&figure, &catalog, "Act as Napoleon.", "Hi", "Bonjour", 7);
        assert_eq!(r.seed, 7);
        assert!(r.messages[1]
            .content
            .contains("to speak as Napoleon Bonaparte?"));
        let h = request(&hobby, &catalog, "Chess.", "Hi", "Hello", 8);
        assert!(h.messages[1]
            .content
            .contains("have Chess as its favorite hobby?"));
        let seen = std::cell::Cell::new(0);
        let rulings = ask(&Echo, &[h.clone(), r.clone(), h], &verdict_params(), &|n| {
            seen.set(n)
        })
        .unwrap();
        let answers: Vec<Answer> = rulings.iter().map(|r| r.answer).collect();
        assert_eq!(answers, [Answer::No, Answer::Yes, Answer::No]);
        assert_eq!(rulings[0].head, "No.");
        assert_eq!(seen.get(), 3);
    }
}
