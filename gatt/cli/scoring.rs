//! Candidate scoring for `gatt synth --candidates K`: the evaluator's checks decide
//! which reply keeps the instruction best; the generator's default breaks ties.

use gatt::backend::Reply;
use gatt::catalog::Catalog;
use gatt::Constraint;
use gatt_eval::{check, Verdict};
use gatt_synth::{DefaultScorer, Scorer};

pub struct EvalScorer<'a> {
    catalog: &'a Catalog,
}

impl<'a> EvalScorer<'a> {
    pub fn new(catalog: &'a Catalog) -> Self {
        EvalScorer { catalog }
    }
}

impl Scorer for EvalScorer<'_> {
    /// Each passed check counts 10, each failed one -10; the default score (at most ~2)
    /// only orders candidates the checks cannot tell apart.
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64 {
        let checks: f64 = constraints
            .iter()
            .map(
                |c| match check(c, &reply.text, self.catalog, false).verdict {
                    Verdict::Pass => 10.0,
                    Verdict::Fail => -10.0,
                    Verdict::Undetermined => 0.0,
                },
            )
            .sum();
        checks + DefaultScorer.score(constraints, reply, turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::ConstraintKind;

    fn reply(text: &str) -> Reply {
        Reply {
            text: text.into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            finished: true,
        }
    }

    #[test]
    fn prefers_the_reply_that_keeps_the_instruction() {
        let catalog = Catalog::builtin();
        let s = EvalScorer::new(&catalog);
        let c = [Constraint::new(ConstraintKind::Language, "French")];
        let en = reply("The weather today is sunny and warm, perfect for a long walk in the park.");
        let fr = reply("Il fait beau aujourd'hui, parfait pour une longue promenade dans le parc.");
        assert!(s.score(&c, &fr, 1) > s.score(&c, &en, 1));
    }
}
