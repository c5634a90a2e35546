//! Sampling constraints from the catalogs.

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Draws between 1 and `max_combined` mutually compatible constraints, each of a kind in
/// `kinds` (at most one per kind, except format rules), as the paper combined them.
pub fn sample_constraints<R: Rng>(
    rng: &mut R,
    catalog: &Catalog,
    kinds: &[ConstraintKind],
    max_combined: usize,
) -> Vec<Constraint> {
    let want = rng.random_range(1..=max_combined.max(1));
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
            let cs = sample_constraints(&mut rng, &catalog, &kinds, 3);
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
    fn only_requested_kinds() {
        let catalog = Catalog::builtin();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            let cs = sample_constraints(&mut rng, &catalog, &[ConstraintKind::Language], 2);
            assert_eq!(cs.len(), 1);
            assert_eq!(cs[0].kind, ConstraintKind::Language);
        }
    }
}
