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
    /// Turns (1-based) whose user message is a probe question about the instruction,
    /// with the kind asked about, in turn order (see [`PlanOptions::probe_rate`]).
    pub probes: Vec<(usize, ConstraintKind)>,
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
    /// Fewest constraints in one instruction (fewer only when the kinds cannot supply
    /// that many compatible ones); 0 counts as 1.
    pub min_combined: usize,
    /// Most constraints in one instruction.
    pub max_combined: usize,
    /// Probability that the instruction is terse (the paper: 0.5); clamped to [0, 1].
    pub terse: f64,
    /// User turns to draw.
    pub turns: usize,
    /// Probability that a user turn from the bank asks for a short answer
    /// ([`CONCISE`]); clamped to [0, 1].
    pub concise: f64,
    /// Probability that a user turn after the first is a probe question about one of the
    /// instruction's hobby, figure or persona constraints, drawn from the catalog's
    /// training probes ([`Catalog::train_probes`], disjoint from the evaluator's);
    /// clamped to [0, 1].
    pub probe_rate: f64,
    /// Probability that a dialogue has no instruction at all (no constraints, no probes):
    /// plain conversations mixed into the GAtt data so that a fine-tune keeps answering
    /// in the user's language when nobody asks otherwise; clamped to [0, 1]. At 0 no
    /// draw is made, so plans are those of a run without it.
    pub plain_share: f64,
}

/// What a user turn adds when it asks for a short answer: small models otherwise write
/// until the token limit, and a cut reply is no training data. Each fits any
/// instruction (a haiku or JSON can be short too).
pub const CONCISE: &[&str] = &[
    "Please keep your answer short.",
    "A short answer is fine.",
    "Just a few sentences, please.",
    "Keep it brief, please.",
];

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
/// (`derive(seed, Stream::SynthPlan, index)`) in a fixed order: (when `plain_share` > 0)
/// whether the dialogue is instruction-free, then constraints (none for a plain
/// dialogue), terseness,
/// phrasing, user turns, then (when `concise` > 0 and the turns come from a bank) for each
/// user turn whether it asks for a short answer, and which request; then (when
/// `probe_rate` > 0 and a constraint has training probes) for each user turn after the
/// first whether it is a probe, about which constraint (one of those asked about least
/// so far), and which question.
pub fn plan(index: usize, o: &PlanOptions, catalog: &Catalog, users: &UserSource) -> DialoguePlan {
    // Stream: SynthPlan (parent: the run seed, index: the dialogue).
    let seed = seed::derive(o.seed, Stream::SynthPlan, index as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plain = o.plain_share > 0.0 && rng.random_bool(o.plain_share.clamp(0.0, 1.0));
    let constraints = match plain {
        true => Vec::new(),
        false => sample_constraints(&mut rng, catalog, o.kinds, o.min_combined, o.max_combined),
    };
    let terse = rng.random_bool(o.terse.clamp(0.0, 1.0));
    let instruction = match plain {
        true => String::new(),
        false => phrase(&mut rng, &constraints, catalog, terse),
    };
    let mut turns = users.turns_for(&mut rng, index, o.turns);
    if o.concise > 0.0 && matches!(users, UserSource::Bank(_)) {
        for t in &mut turns {
            if rng.random_bool(o.concise.clamp(0.0, 1.0)) {
                let ask = CONCISE[rng.random_range(0..CONCISE.len())];
                *t = format!("{t} {ask}");
            }
        }
    }
    let mut probes = Vec::new();
    let probeable: Vec<&Constraint> = constraints
        .iter()
        .filter(|c| !catalog.train_probes.of(&c.kind).is_empty())
        .collect();
    if o.probe_rate > 0.0 && !probeable.is_empty() {
        let mut asked: Vec<String> = Vec::new();
        for (t, user) in turns.iter_mut().enumerate().skip(1) {
            if rng.random_bool(o.probe_rate.clamp(0.0, 1.0)) {
                // The probe asks about one of the constraints asked about least so far,
                // so a dialogue with a figure and a hobby probes both in turn.
                let times = |c: &Constraint| probes.iter().filter(|(_, k)| *k == c.kind).count();
                let least = probeable.iter().map(|c| times(c)).min().unwrap_or(0);
                let pool: Vec<&Constraint> = probeable
                    .iter()
                    .copied()
                    .filter(|c| times(c) == least)
                    .collect();
                let c = pool[rng.random_range(0..pool.len())];
                // A question already asked in this dialogue is not asked again while
                // the bank has others.
                let all = catalog.train_probes.of(&c.kind);
                let fresh: Vec<&String> = all.iter().filter(|q| !asked.contains(q)).collect();
                let pool: Vec<&String> = if fresh.is_empty() {
                    all.iter().collect()
                } else {
                    fresh
                };
                let question = pool[rng.random_range(0..pool.len())].clone();
                asked.push(question.clone());
                *user = question;
                probes.push((t + 1, c.kind.clone()));
            }
        }
    }
    DialoguePlan {
        index,
        id: format!("gatt-{:x}-{index:07}", o.seed),
        seed,
        constraints,
        instruction,
        terse,
        users: turns,
        probes,
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

    #[test]
    fn concise_requests_are_appended_last_and_only_to_bank_turns() {
        let catalog = Catalog::builtin();
        let bank = UserSource::Bank(catalog.user_bank.clone());
        let kinds = [ConstraintKind::Hobby];
        let o = |concise| PlanOptions {
            seed: 3,
            kinds: &kinds,
            min_combined: 1,
            max_combined: 1,
            terse: 0.5,
            turns: 4,
            concise,
            probe_rate: 0.0,
            plain_share: 0.0,
        };
        let plain = plan(0, &o(0.0), &catalog, &bank);
        let all = plan(0, &o(1.0), &catalog, &bank);
        assert_eq!(
            (&plain.constraints, &plain.instruction),
            (&all.constraints, &all.instruction)
        );
        for (p, a) in plain.users.iter().zip(&all.users) {
            let ask = a.strip_prefix(p.as_str()).unwrap().trim();
            assert!(CONCISE.contains(&ask), "{a}");
        }
        let records = UserSource::Dialogues(vec![vec!["hi".into()]]);
        assert_eq!(plan(0, &o(1.0), &catalog, &records).users, ["hi"]);
    }

    #[test]
    fn probe_turns_ask_about_the_instruction_from_the_training_bank() {
        let catalog = Catalog::builtin();
        let bank = UserSource::Bank(catalog.user_bank.clone());
        let kinds = [ConstraintKind::Figure, ConstraintKind::Language];
        let o = |probe_rate| PlanOptions {
            seed: 1,
            kinds: &kinds,
            min_combined: 1,
            max_combined: 2,
            terse: 0.5,
            turns: 6,
            concise: 0.0,
            probe_rate,
            plain_share: 0.0,
        };
        let mut seen = 0;
        for i in 0..40 {
            let none = plan(i, &o(0.0), &catalog, &bank);
            assert!(none.probes.is_empty());
            let p = plan(i, &o(1.0), &catalog, &bank);
            assert_eq!(p.constraints, none.constraints);
            let figure = p
                .constraints
                .iter()
                .any(|c| c.kind == ConstraintKind::Figure);
            if !figure {
                assert!(p.probes.is_empty(), "language has no probes");
                continue;
            }
            let turns: Vec<usize> = p.probes.iter().map(|(t, _)| *t).collect();
            assert_eq!(turns, [2, 3, 4, 5, 6], "every turn after the first");
            for (t, k) in &p.probes {
                assert_eq!(*k, ConstraintKind::Figure);
                assert!(catalog.train_probes.figure.contains(&p.users[t - 1]));
            }
            // Five probes, no question twice (the bank holds more than five).
            let mut asked: Vec<&String> = p.users[1..].iter().collect();
            asked.sort();
            asked.dedup();
            assert_eq!(asked.len(), 5, "{:?}", p.users);
            seen += 1;
        }
        assert!(seen > 5);
    }

    /// With a figure and a hobby, a dialogue with two probe turns asks about each once.
    #[test]
    fn probes_ask_about_every_probeable_constraint_before_repeating_one() {
        let catalog = Catalog::builtin();
        let bank = UserSource::Bank(catalog.user_bank.clone());
        let kinds = [ConstraintKind::Figure, ConstraintKind::Hobby];
        let o = |turns| PlanOptions {
            seed: 4,
            kinds: &kinds,
            min_combined: 2,
            max_combined: 2,
            terse: 0.5,
            turns,
            concise: 0.0,
            probe_rate: 1.0,
            plain_share: 0.0,
        };
        for i in 0..40 {
            let p = plan(i, &o(3), &catalog, &bank);
            assert_eq!(p.constraints.len(), 2, "{:?}", p.constraints);
            let mut asked: Vec<String> = p.probes.iter().map(|(_, k)| k.to_string()).collect();
            asked.sort();
            assert_eq!(asked, ["figure", "hobby"], "dialogue {i}");
            // Five probes: each kind at least twice (asked in turn).
            let p = plan(i, &o(6), &catalog, &bank);
            for kind in &kinds {
                let n = p.probes.iter().filter(|(_, k)| k == kind).count();
                assert!(
                    n >= 2,
                    "dialogue {i}: {kind} asked {n} times in {:?}",
                    p.probes
                );
            }
        }
    }

    /// The training probes share no phrasing with the evaluator's: no question, and no
    /// run of four words (case and punctuation aside), so that evaluation stays held out.
    #[test]
    fn training_probes_are_disjoint_from_the_evaluators() {
        let catalog = Catalog::builtin();
        let words = |s: &str| -> Vec<String> {
            s.split_whitespace()
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric())
                        .to_lowercase()
                })
                .filter(|w| !w.is_empty())
                .collect()
        };
        let mut eval_grams = std::collections::HashSet::new();
        let mut eval_questions = std::collections::HashSet::new();
        for kind in ConstraintKind::KNOWN {
            for q in catalog.probes.of(&kind) {
                let w = words(q);
                eval_questions.insert(w.clone());
                eval_grams.extend(w.windows(4).map(|g| g.to_vec()));
            }
        }
        let mut n = 0;
        for kind in ConstraintKind::KNOWN {
            assert_eq!(
                catalog.train_probes.of(&kind).is_empty(),
                catalog.probes.of(&kind).is_empty(),
                "{kind}: training probes for exactly the kinds the evaluator probes"
            );
            for q in catalog.train_probes.of(&kind) {
                let w = words(q);
                assert!(!eval_questions.contains(&w), "{q}: an evaluator probe");
                for g in w.windows(4) {
                    assert!(!eval_grams.contains(g), "{q}: shares {g:?}");
                }
                n += 1;
            }
        }
        assert!(n >= 15);
    }

    #[test]
    fn a_plain_share_of_dialogues_has_no_instruction() {
        let catalog = Catalog::builtin();
        let bank = UserSource::Bank(catalog.user_bank.clone());
        let kinds = [ConstraintKind::Figure, ConstraintKind::Language];
        let o = |plain_share| PlanOptions {
            seed: 5,
            kinds: &kinds,
            min_combined: 1,
            max_combined: 2,
            terse: 0.5,
            turns: 4,
            concise: 0.0,
            probe_rate: 1.0,
            plain_share,
        };
        let plans: Vec<DialoguePlan> = (0..200)
            .map(|i| plan(i, &o(0.25), &catalog, &bank))
            .collect();
        let plain: Vec<&DialoguePlan> = plans.iter().filter(|p| p.constraints.is_empty()).collect();
        assert!((30..=70).contains(&plain.len()), "{} of 200", plain.len());
        for p in &plain {
            assert_eq!(p.instruction, "");
            assert!(p.probes.is_empty());
            assert_eq!(p.users.len(), 4);
        }
        assert!(plans
            .iter()
            .filter(|p| !p.constraints.is_empty())
            .all(|p| !p.instruction.is_empty()));
        // Every dialogue plain, or none: the draw is made only when asked for.
        assert!((0..20).all(|i| plan(i, &o(1.0), &catalog, &bank).constraints.is_empty()));
        assert!((0..20).all(|i| !plan(i, &o(0.0), &catalog, &bank).constraints.is_empty()));
    }
}
