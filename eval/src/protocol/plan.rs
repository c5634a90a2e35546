//! What one evaluation dialogue asks, decided before any model runs: its constraints,
//! the instruction that states them, and the user message of every turn.
//!
//! A plan is a pure function of (seed, dialogue index, catalog, options), so two runs
//! with the same seed ask every model exactly the same questions.

use super::ProtocolOptions;
use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind, Error, Result};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often a random pick may clash with the constraints already chosen before the
/// dialogue is given up (clashes are rare: only some formats exclude some languages).
const PICK_ATTEMPTS: usize = 256;

/// What one evaluation dialogue asks, fixed before any model runs: a pure function of
/// (seed, dialogue index, catalog, options).
#[derive(Debug, Clone, PartialEq)]
pub struct DialoguePlan {
    /// One per requested kind, in the order of [`ProtocolOptions::kinds`].
    pub constraints: Vec<Constraint>,
    /// The system message that states them ([`phrase`]).
    pub instruction: String,
    /// The user message of turn `t` at index `t - 1`.
    pub user_messages: Vec<String>,
    /// Probe turns (1-based) and the kind each one asks about.
    pub probes: Vec<(usize, ConstraintKind)>,
}

impl DialoguePlan {
    /// The plan of dialogue `index`: each dialogue draws from its own ChaCha stream.
    ///
    /// # Errors
    ///
    /// An input error when a kind cannot be evaluated or has no compatible value in the
    /// catalog, or when the catalog's user bank is empty.
    pub fn new(index: usize, catalog: &Catalog, opts: &ProtocolOptions) -> Result<Self> {
        // ChaCha8 stream `index` of the run seed: the generator's own independent
        // streams, not a `gatt::seed` derivation (see that module).
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(index as u64);
        let constraints = pick_constraints(&mut rng, catalog, &opts.kinds)?;
        let instruction = phrase(&constraints, catalog);

        let mut bank: Vec<&String> = catalog.user_bank.iter().collect();
        bank.shuffle(&mut rng);
        let probed = probed_kinds(&constraints, catalog);
        let mut user_messages = Vec::with_capacity(opts.turns);
        let mut probes = Vec::new();
        let mut next_bank = 0;
        for turn in 1..=opts.turns {
            let probe_turn = opts.probe_every > 0 && turn % opts.probe_every == 0;
            if probe_turn && !probed.is_empty() {
                // Rotate through the probed kinds, and through each kind's questions.
                let k = probes.len();
                let kind = &probed[k % probed.len()];
                let questions = catalog.probes.of(kind);
                user_messages.push(questions[(k / probed.len()) % questions.len()].clone());
                probes.push((turn, kind.clone()));
            } else {
                let Some(message) = bank.get(next_bank % bank.len().max(1)) else {
                    return Err(Error::input(
                        "the catalog's user bank is empty: no user messages to ask",
                    ));
                };
                user_messages.push((*message).clone());
                next_bank += 1;
            }
        }
        Ok(DialoguePlan {
            constraints,
            instruction,
            user_messages,
            probes,
        })
    }
}

/// The kinds of `constraints` that have probe questions, in order, each once.
fn probed_kinds(constraints: &[Constraint], catalog: &Catalog) -> Vec<ConstraintKind> {
    let mut kinds: Vec<ConstraintKind> = Vec::new();
    for c in constraints {
        if !catalog.probes.of(&c.kind).is_empty() && !kinds.contains(&c.kind) {
            kinds.push(c.kind.clone());
        }
    }
    kinds
}

/// One random constraint per requested kind (a format rule comes with a random
/// parameter), compatible with those picked before it.
pub fn pick_constraints<R: Rng>(
    rng: &mut R,
    catalog: &Catalog,
    kinds: &[ConstraintKind],
) -> Result<Vec<Constraint>> {
    let mut picked: Vec<Constraint> = Vec::new();
    for kind in kinds {
        if let ConstraintKind::Other(k) = kind {
            return Err(Error::input(format!(
                "cannot evaluate constraint kind `{k}`: known kinds are hobby, language, \
                 figure, persona and format"
            )));
        }
        let values = catalog.values(kind);
        if values.is_empty() {
            return Err(Error::input(format!("the catalog has no {kind} entries")));
        }
        let found = (0..PICK_ATTEMPTS).find_map(|_| {
            let value = values.choose(rng)?;
            let param = catalog
                .format(value)
                .filter(|_| *kind == ConstraintKind::Format)
                .and_then(|rule| rule.param_values().choose(rng).cloned());
            let c = Constraint {
                kind: kind.clone(),
                value: value.to_string(),
                param,
            };
            picked
                .iter()
                .all(|p| catalog.compatible(p, &c))
                .then_some(c)
        });
        match found {
            Some(c) => picked.push(c),
            None => {
                let taken: Vec<String> = picked.iter().map(Catalog::id_of).collect();
                return Err(Error::input(format!(
                    "no {kind} constraint is compatible with [{}]; \
                     ask for each kind at most once",
                    taken.join(", ")
                )));
            }
        }
    }
    Ok(picked)
}

/// The instruction for `constraints`: each stated with the first verbose phrasing of its
/// kind, joined by spaces. Fixed phrasings keep the measurement about the model, not
/// about which wording a dialogue happened to draw.
pub fn phrase(constraints: &[Constraint], catalog: &Catalog) -> String {
    let parts: Vec<String> = constraints
        .iter()
        .map(|c| {
            let pattern = catalog
                .phrasings
                .of(&c.kind)
                .and_then(|p| p.verbose.first());
            catalog.state(c, pattern.map(String::as_str))
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kinds: Vec<ConstraintKind>) -> ProtocolOptions {
        ProtocolOptions {
            kinds,
            turns: 6,
            probe_every: 2,
            ..ProtocolOptions::default()
        }
    }

    #[test]
    fn phrases_with_the_first_verbose_form() {
        let cat = Catalog::builtin();
        let mut words = Constraint::new(ConstraintKind::Format, "ends_with");
        words.param = Some("Stay curious.".into());
        let cs = [Constraint::new(ConstraintKind::Language, "French"), words];
        assert_eq!(
            phrase(&cs, &cat),
            "Always answer in French. From now on, end every reply with the phrase \
             \"Stay curious.\""
        );
    }

    #[test]
    fn probes_rotate_over_probed_kinds() {
        let cat = Catalog::builtin();
        let o = opts(vec![
            ConstraintKind::Figure,
            ConstraintKind::Language,
            ConstraintKind::Hobby,
        ]);
        let p = DialoguePlan::new(0, &cat, &o).unwrap();
        let kinds: Vec<_> = p.probes.iter().map(|(t, k)| (*t, k.as_str())).collect();
        assert_eq!(kinds, [(2, "figure"), (4, "hobby"), (6, "figure")]);
        assert_eq!(p.user_messages[1], cat.probes.figure[0]);
        assert_eq!(p.user_messages[5], cat.probes.figure[1]);
    }

    #[test]
    fn no_probes_without_a_probed_kind_and_bad_kinds_are_refused() {
        let cat = Catalog::builtin();
        let p = DialoguePlan::new(1, &cat, &opts(vec![ConstraintKind::Language])).unwrap();
        assert!(p.probes.is_empty());
        assert!(p.user_messages.iter().all(|m| cat.user_bank.contains(m)));
        let twice = opts(vec![ConstraintKind::Hobby, ConstraintKind::Hobby]);
        assert!(DialoguePlan::new(0, &cat, &twice).unwrap_err().is_input());
        let other = opts(vec![ConstraintKind::Other("mood".into())]);
        assert!(DialoguePlan::new(0, &cat, &other).is_err());
    }

    #[test]
    fn format_constraints_carry_a_parameter_when_the_rule_takes_one() {
        let cat = Catalog::builtin();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let c = pick_constraints(&mut rng, &cat, &[ConstraintKind::Format]).unwrap();
            let rule = cat.format(&c[0].value).unwrap();
            assert_eq!(c[0].param.is_some(), !rule.param_values().is_empty());
        }
    }
}
