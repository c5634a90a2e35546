//! Choosing the best of several candidate replies (several candidates per turn), as in the paper's
//! rejection-sampling step. The binary plugs in the evaluator's checks; the default
//! prefers complete, substantive replies.

use gatt::backend::Reply;
use gatt::Constraint;

/// Rates a candidate reply, so that [`best`] can keep one per turn.
pub trait Scorer: Send + Sync {
    /// Higher is better; `turn` is 1-based.
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64;
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
) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, r) in replies.iter().enumerate() {
        let s = scorer.score(constraints, r, turn);
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best
}
