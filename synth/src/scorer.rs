//! Choosing the best of several candidate replies (several candidates per turn), as in the paper's
//! rejection-sampling step. The binary plugs in the evaluator's checks; the default
//! prefers complete, substantive replies.

use gatt::backend::Reply;
use gatt::{Constraint, ConstraintKind};

/// Rates a candidate reply, so that [`best`] can keep one per turn.
pub trait Scorer: Send + Sync {
    /// Higher is better; `turn` is 1-based.
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64;

    /// [`Scorer::score`] on a turn whose user message may be a probe question about the
    /// constraints of kind `probe` (`--probe-rate`); by default the same.
    fn score_turn(
        &self,
        constraints: &[Constraint],
        reply: &Reply,
        turn: usize,
        probe: Option<&ConstraintKind>,
    ) -> f64 {
        let _ = probe;
        self.score(constraints, reply, turn)
    }

    /// How many of the constraints' checks the reply passed and how many could be
    /// decided, for `--min-adherence`; `(0, 0)` (nothing decided) by default.
    fn adherence(
        &self,
        constraints: &[Constraint],
        reply: &str,
        probe: Option<&ConstraintKind>,
    ) -> (usize, usize) {
        let _ = (constraints, reply, probe);
        (0, 0)
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

/// Index of the best candidate (the first among equals).
pub fn best(
    scorer: &dyn Scorer,
    constraints: &[Constraint],
    replies: &[Reply],
    turn: usize,
    probe: Option<&ConstraintKind>,
) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, r) in replies.iter().enumerate() {
        let s = scorer.score_turn(constraints, r, turn, probe);
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best
}
