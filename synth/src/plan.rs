//! What each dialogue will be, decided up front from (seed, index) alone.

use crate::phrase::phrase;
use crate::sample::sample_constraints;
use crate::users::UserSource;
use gatt::catalog::Catalog;
use gatt::seed::{self, Stream};
use gatt::{Constraint, ConstraintKind, Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Everything random about one dialogue except the model's replies.
#[derive(Debug, Clone, PartialEq)]
pub struct DialoguePlan {
    /// Position in the whole (unsharded) job.
    pub index: usize,
    /// The record's id: `gatt-<run seed in hex>-<index, zero-padded to 7 digits>`.
    pub id: String,
    /// Seeds this dialogue's sampling.
    pub seed: u64,
    /// What the instruction asks for, mutually compatible.
    pub constraints: Vec<Constraint>,
    /// The constraints phrased as one instruction.
    pub instruction: String,
    /// Whether the instruction is in its terse form ("Language: French.").
    pub terse: bool,
    /// The user's messages, without the instruction.
    pub users: Vec<String>,
}

/// `I/N`: this machine's share of a job split over N machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    /// Machines the job is split over, at least 1.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::input(format!("`{s}`: expected I/N with 1 <= I <= N, e.g. 2/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Dialogues are dealt round-robin, so shards stay balanced and disjoint.
    pub fn owns(&self, index: usize) -> bool {
        index % self.count == self.index - 1
    }
}

/// What [`plan`] needs of [`crate::SynthOptions`].
pub struct PlanOptions<'a> {
    /// The run seed.
    pub seed: u64,
    /// Constraint kinds to sample from.
    pub kinds: &'a [ConstraintKind],
    /// Most constraints in one instruction.
    pub max_combined: usize,
    /// Probability that the instruction is terse (the paper: 0.5); clamped to [0, 1].
    pub terse: f64,
    /// User turns to draw.
    pub turns: usize,
}

/// Checks that every kind in `kinds` can be drawn: an empty list of kinds, or a kind
/// whose catalog has no entries (`--catalog hobby=FILE` with `[]`), would give
/// dialogues without (that part of) an instruction.
///
/// # Errors
///
/// An input error naming the kind and where its entries come from.
pub fn check_kinds(catalog: &Catalog, kinds: &[ConstraintKind]) -> Result<()> {
    if kinds.is_empty() {
        return Err(Error::input(
            "--constraints: no constraint kind to sample from; name at least one",
        ));
    }
    for kind in kinds {
        if catalog.values(kind).is_empty() {
            return Err(Error::input(format!(
                "--constraints asks for `{kind}`, but its catalog has no entries (a \
                 `--catalog {kind}=FILE` with an empty list?): its dialogues would have no \
                 instruction; give entries or leave `{kind}` out of --constraints"
            )));
        }
    }
    Ok(())
}

/// The plan of dialogue `index`: a pure function of (the run seed, `index`) for given
/// options, catalog and users, drawn from ChaCha8 seeded with the plan seed
/// (`derive(seed, Stream::SynthPlan, index)`) in a fixed order: constraints, terseness,
/// phrasing, user turns.
pub fn plan(index: usize, o: &PlanOptions, catalog: &Catalog, users: &UserSource) -> DialoguePlan {
    // Stream: SynthPlan (parent: the run seed, index: the dialogue).
    let seed = seed::derive(o.seed, Stream::SynthPlan, index as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let constraints = sample_constraints(&mut rng, catalog, o.kinds, o.max_combined);
    let terse = rng.random_bool(o.terse.clamp(0.0, 1.0));
    let instruction = phrase(&mut rng, &constraints, catalog, terse);
    let users = users.turns_for(&mut rng, index, o.turns);
    DialoguePlan {
        index,
        id: format!("gatt-{:x}-{index:07}", o.seed),
        seed,
        constraints,
        instruction,
        terse,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_without_entries_are_refused() {
        let mut catalog = Catalog::builtin();
        let kinds = [ConstraintKind::Hobby, ConstraintKind::Language];
        check_kinds(&catalog, &kinds).unwrap();
        catalog.hobbies.clear();
        let e = check_kinds(&catalog, &kinds).unwrap_err();
        assert!(e.is_input() && e.to_string().contains("`hobby`"), "{e}");
        check_kinds(&catalog, &[ConstraintKind::Language]).unwrap();
        assert!(check_kinds(&catalog, &[]).unwrap_err().is_input());
    }
}
