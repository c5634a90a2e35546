//! Sampling constraints from the catalogs.

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Draws between `min_combined` and `max_combined` (uniformly; 0 counts as 1)
/// mutually compatible constraints, each of a kind in `kinds` (at most one per kind,
/// except format rules), as the paper combined them. Fewer than `min_combined` only
/// when the kinds cannot supply that many compatible constraints.
pub fn sample_constraints<R: Rng>(
    rng: &mut R,
    catalog: &Catalog,
    kinds: &[ConstraintKind],
    min_combined: usize,
    max_combined: usize,
) -> Vec<Constraint> {
    let most = max_combined.max(1);
    let want = rng.random_range(min_combined.clamp(1, most)..=most);
    let mut order: Vec<&ConstraintKind> = kinds.iter().collect();
    order.shuffle(rng);
    let mut chosen: Vec<Constraint> = Vec::new();
    // Several passes so that format rules can fill slots other kinds left empty.
    for kind in order.iter().cycle().take(order.len() * 3) {
        if chosen.len() >= want {
            break;
        }
        let Some(c) = draw(rng, catalog, kind) else {
            continue;
        };
        if chosen.iter().all(|x| catalog.compatible(x, &c)) {
            chosen.push(c);
        }
    }
    chosen
}

/// One constraint of `kind`, or None when its catalog is empty.
pub fn draw<R: Rng>(rng: &mut R, catalog: &Catalog, kind: &ConstraintKind) -> Option<Constraint> {
    if *kind == ConstraintKind::Format {
        let rule = catalog.formats.choose(rng)?;
        let mut c = Constraint::new(ConstraintKind::Format, rule.id.clone());
        c.param = rule.param_values().choose(rng).cloned();
        return Some(c);
    }
    let value = catalog.values(kind).choose(rng)?.to_string();
    Some(Constraint::new(kind.clone(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn combinations_are_compatible_and_bounded() {
        let catalog = Catalog::builtin();
        let kinds = ConstraintKind::KNOWN.to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen_multi = false;
        for _ in 0..500 {
            let cs = sample_constraints(&mut rng, &catalog, &kinds, 1, 3);
            assert!((1..=3).contains(&cs.len()));
            seen_multi |= cs.len() > 1;
            for (i, a) in cs.iter().enumerate() {
                for b in &cs[i + 1..] {
                    assert!(catalog.compatible(a, b), "{a:?} with {b:?}");
                }
            }
        }
        assert!(seen_multi);
    }

    #[test]
    fn min_combined_gives_every_instruction_that_many() {
        let catalog = Catalog::builtin();
        let kinds = [
            ConstraintKind::Figure,
            ConstraintKind::Hobby,
            ConstraintKind::Language,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let cs = sample_constraints(&mut rng, &catalog, &kinds, 3, 3);
            let mut got: Vec<String> = cs.iter().map(|c| c.kind.to_string()).collect();
            got.sort();
            assert_eq!(got, ["figure", "hobby", "language"]);
            let two_or_three = sample_constraints(&mut rng, &catalog, &kinds, 2, 3);
            assert!((2..=3).contains(&two_or_three.len()));
        }
        // Only one language kind: two are asked for, one is all there is.
        let cs = sample_constraints(&mut rng, &catalog, &[ConstraintKind::Language], 2, 2);
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn only_requested_kinds() {
        let catalog = Catalog::builtin();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            let cs = sample_constraints(&mut rng, &catalog, &[ConstraintKind::Language], 1, 2);
            assert_eq!(cs.len(), 1);
            assert_eq!(cs[0].kind, ConstraintKind::Language);
        }
    }
}
