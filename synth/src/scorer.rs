//! Choosing the best of several candidate replies (several candidates per turn), as in the paper's
//! rejection-sampling step. The binary plugs in the evaluator's checks; the default
//! prefers complete, substantive replies. With a judge model (`--judge-model`), its
//! verdicts on hobby, figure and persona reach the scorer as [`Judged`].

use gatt::backend::Reply;
use gatt::{Constraint, ConstraintKind};

/// A judge model's verdicts on one candidate reply, one per constraint of its dialogue,
/// in the constraints' order: `Some(true)` (yes, kept), `Some(false)` (no), `None` (not
/// asked: not a judged kind, or no judge; or the judge answered neither). Empty without
/// a judge.
pub type Judged = [Option<bool>];

/// Points a decided check is worth in the scores of [`Scorer::score_turn`]: a pass adds
/// them, a fail takes them away.
pub const CHECK_POINTS: f64 = 10.0;

/// The judge's part of a score: [`CHECK_POINTS`] per yes, minus as many per no.
pub fn judge_points(judged: &Judged) -> f64 {
    judged
        .iter()
        .flatten()
        .map(|&yes| if yes { CHECK_POINTS } else { -CHECK_POINTS })
        .sum()
}

/// The judge's verdicts as adherence: (yes, yes + no).
pub fn judge_adherence(judged: &Judged) -> (usize, usize) {
    let decided = judged.iter().flatten().count();
    let yes = judged.iter().flatten().filter(|&&y| y).count();
    (yes, decided)
}

/// Rates a candidate reply, so that [`best`] can keep one per turn.
pub trait Scorer: Send + Sync {
    /// Higher is better; `turn` is 1-based.
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64;

    /// [`Scorer::score`] on a turn whose user message may be a probe question about the
    /// constraints of kind `probe` (`--probe-rate`), with a judge's verdicts on the reply
    /// (empty without a judge); by default [`Scorer::score`] plus [`judge_points`].
    fn score_turn(
        &self,
        constraints: &[Constraint],
        reply: &Reply,
        turn: usize,
        probe: Option<&ConstraintKind>,
        judged: &Judged,
    ) -> f64 {
        let _ = probe;
        self.score(constraints, reply, turn) + judge_points(judged)
    }

    /// How many of the constraints' checks the reply passed and how many could be
    /// decided, for `--min-adherence`; by default only the judge's verdicts
    /// ([`judge_adherence`]; `(0, 0)` without a judge).
    fn adherence(
        &self,
        constraints: &[Constraint],
        reply: &str,
        probe: Option<&ConstraintKind>,
        judged: &Judged,
    ) -> (usize, usize) {
        let _ = (constraints, reply, probe);
        judge_adherence(judged)
    }
}

/// Finished beats cut off; empty or one-word replies lose; otherwise longer replies win
/// slightly, up to a point.
pub struct DefaultScorer;

impl Scorer for DefaultScorer {
    fn score(&self, _: &[Constraint], reply: &Reply, _: usize) -> f64 {
        let words = reply.text.split_whitespace().count() as f64;
        let mut s = words.min(120.0) / 120.0;
        if reply.finished {
            s += 1.0;
        }
        if words < 2.0 {
            s -= 2.0;
        }
        s
    }
}

/// Index of the best candidate (the first among equals). `judged[i]` holds the judge's
/// verdicts on `replies[i]`; `judged` is empty (or shorter) where no judge was asked.
pub fn best(
    scorer: &dyn Scorer,
    constraints: &[Constraint],
    replies: &[Reply],
    turn: usize,
    probe: Option<&ConstraintKind>,
    judged: &[Vec<Option<bool>>],
) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, r) in replies.iter().enumerate() {
        let verdicts = judged.get(i).map_or(&[][..], Vec::as_slice);
        let s = scorer.score_turn(constraints, r, turn, probe, verdicts);
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best
}
