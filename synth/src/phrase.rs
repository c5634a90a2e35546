//! Phrasing constraints as one instruction, verbose or terse ("Figure: Napoleon.").

use gatt::catalog::Catalog;
use gatt::Constraint;
use rand::seq::IndexedRandom;
use rand::Rng;

/// One instruction for all `constraints`: each phrased with a random verbose phrasing,
/// or all with their terse form.
pub fn phrase<R: Rng>(
    rng: &mut R,
    constraints: &[Constraint],
    catalog: &Catalog,
    terse: bool,
) -> String {
    let parts: Vec<String> = constraints
        .iter()
        .map(|c| {
            let pattern = catalog.phrasings.of(&c.kind).map(|p| {
                if terse {
                    &p.terse
                } else {
                    p.verbose.choose(rng).unwrap_or(&p.terse)
                }
            });
            catalog.state(c, pattern.map(String::as_str))
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatt::ConstraintKind;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn terse_and_verbose_forms() {
        let catalog = Catalog::builtin();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let cs = vec![
            Constraint::new(ConstraintKind::Figure, "Napoleon Bonaparte"),
            Constraint::new(ConstraintKind::Language, "French"),
        ];
        assert_eq!(
            phrase(&mut rng, &cs, &catalog, true),
            "Figure: Napoleon Bonaparte. Language: French."
        );
        let v = phrase(&mut rng, &cs, &catalog, false);
        assert!(
            v.contains("Napoleon Bonaparte") && v.contains("French"),
            "{v}"
        );
    }

    #[test]
    fn format_parameters_are_filled() {
        let catalog = Catalog::builtin();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut c = Constraint::new(ConstraintKind::Format, "max_words");
        c.param = Some("20".into());
        let v = phrase(&mut rng, &[c], &catalog, true);
        assert!(v.contains("20") && !v.contains('{'), "{v}");
    }
}
