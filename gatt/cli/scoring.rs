//! Candidate scoring for `gatt synth --candidates K`: the evaluator's checks (and a
//! judge model's verdicts, with `--judge-model`) decide which reply keeps the instruction
//! best; the generator's default breaks ties.

use gatt::backend::Reply;
use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use gatt_eval::{check, Verdict};
use gatt_synth::scorer::{judge_adherence, judge_points, CHECK_POINTS};
use gatt_synth::{DefaultScorer, Judged, Scorer};

pub struct EvalScorer<'a> {
    catalog: &'a Catalog,
}

impl<'a> EvalScorer<'a> {
    pub fn new(catalog: &'a Catalog) -> Self {
        EvalScorer { catalog }
    }
}

impl Scorer for EvalScorer<'_> {
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64 {
        self.score_turn(constraints, reply, turn, None, &[])
    }

    /// Each passed check counts 10, each failed one -10. Hobby, figure and persona are
    /// decided by code on their probe turns only; a judge's yes or no on them counts 10 or
    /// -10 on every turn, as a check of its own. Where neither decided, cheap signals
    /// count instead: the reply names the figure (or an alias) or uses the hobby's or
    /// persona's keywords (+3), and speaks in the first person (+1, figure and persona).
    /// The default score (at most ~2) only orders candidates the rest cannot tell apart.
    fn score_turn(
        &self,
        constraints: &[Constraint],
        reply: &Reply,
        turn: usize,
        probe: Option<&ConstraintKind>,
        judged: &Judged,
    ) -> f64 {
        let checks: f64 = constraints
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let on_probe = probe == Some(&c.kind);
                let judge = judged.get(j).copied().flatten();
                match check(c, constraints, &reply.text, self.catalog, on_probe).verdict {
                    Verdict::Pass => CHECK_POINTS,
                    Verdict::Fail => -CHECK_POINTS,
                    Verdict::Undetermined if judge.is_none() => {
                        self.signals(c, constraints, &reply.text)
                    }
                    Verdict::Undetermined => 0.0,
                }
            })
            .sum();
        checks + judge_points(judged) + DefaultScorer.score(constraints, reply, turn)
    }

    /// The evaluator's decided checks (probe-aware), plus the judge's yes and no
    /// verdicts, for `--min-adherence`.
    fn adherence(
        &self,
        constraints: &[Constraint],
        reply: &str,
        probe: Option<&ConstraintKind>,
        judged: &Judged,
    ) -> (usize, usize) {
        let mut n = judge_adherence(judged);
        for c in constraints {
            match check(c, constraints, reply, self.catalog, probe == Some(&c.kind)).verdict {
                Verdict::Pass => n = (n.0 + 1, n.1 + 1),
                Verdict::Fail => n.1 += 1,
                Verdict::Undetermined => {}
            }
        }
        n
    }
}

impl EvalScorer<'_> {
    /// Cheap evidence that a reply keeps a hobby, figure or persona on a turn that does
    /// not ask about it (0 for other kinds).
    fn signals(&self, c: &Constraint, all: &[Constraint], text: &str) -> f64 {
        let probeable = matches!(
            c.kind,
            ConstraintKind::Hobby | ConstraintKind::Figure | ConstraintKind::Persona
        );
        if !probeable {
            return 0.0;
        }
        // The probe-turn check: the figure's name or aliases, the hobby's or persona's
        // keywords, as whole words.
        let mentions = check(c, all, text, self.catalog, true).verdict == Verdict::Pass;
        let first_person = c.kind != ConstraintKind::Hobby && first_person(text);
        3.0 * f64::from(u8::from(mentions)) + f64::from(u8::from(first_person))
    }
}

/// True when the reply speaks as "I" (English first-person words).
fn first_person(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .any(|w| matches!(w, "I" | "I'm" | "I've" | "me" | "my" | "My" | "Me"))
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

    #[test]
    fn cheap_signals_judge_a_figure_on_every_turn() {
        let catalog = Catalog::builtin();
        let s = EvalScorer::new(&catalog);
        let c = [Constraint::new(
            ConstraintKind::Figure,
            "Napoleon Bonaparte",
        )];
        let named = reply("I am Napoleon, and the sky is blue because air scatters blue light.");
        let voice = reply("I think the sky is blue because air scatters the blue light most.");
        let plain = reply("The sky is blue because air scatters the blue part of sunlight.");
        let (a, b, d) = (
            s.score(&c, &named, 2),
            s.score(&c, &voice, 2),
            s.score(&c, &plain, 2),
        );
        assert!(a > b && b > d, "{a} {b} {d}");
        // On a probe turn the evaluator's check decides, and counts for adherence.
        let probe = Some(&ConstraintKind::Figure);
        assert!(s.score_turn(&c, &plain, 2, probe, &[]) < -5.0);
        assert_eq!(s.adherence(&c, &named.text, probe, &[]), (1, 1));
        assert_eq!(s.adherence(&c, &plain.text, probe, &[]), (0, 1));
        assert_eq!(
            s.adherence(&c, &plain.text, None, &[]),
            (0, 0),
            "undecided off probes"
        );
    }

    #[test]
    fn a_judges_verdict_outweighs_the_cheap_signals_on_every_turn() {
        let catalog = Catalog::builtin();
        let s = EvalScorer::new(&catalog);
        let c = [
            Constraint::new(ConstraintKind::Language, "English"),
            Constraint::new(ConstraintKind::Figure, "Napoleon Bonaparte"),
        ];
        let named = reply("I am Napoleon, and the sky is blue because air scatters blue light.");
        let plain = reply("The sky is blue because air scatters the blue part of sunlight.");
        // Without a judge the cheap signals prefer the reply that names the figure...
        assert!(s.score_turn(&c, &named, 2, None, &[]) > s.score_turn(&c, &plain, 2, None, &[]));
        // ...a judge that says no to it and yes to the other decides (language: no verdict).
        let no = [None, Some(false)];
        let yes = [None, Some(true)];
        assert!(s.score_turn(&c, &plain, 2, None, &yes) > s.score_turn(&c, &named, 2, None, &no));
        // Its verdicts count as decided checks for --min-adherence, beside the code's.
        assert_eq!(
            s.adherence(&c[1..], &plain.text, None, &[Some(true)]),
            (1, 1)
        );
        let probe = Some(&ConstraintKind::Figure);
        assert_eq!(
            s.adherence(&c[1..], &plain.text, probe, &[Some(true)]),
            (1, 2)
        );
    }
}
