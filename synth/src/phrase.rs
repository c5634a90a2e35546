//! Phrasing constraints as one instruction, verbose or terse ("Figure: Napoleon.").

use gatt::catalog::Catalog;
use gatt::{Constraint, ConstraintKind};
use rand::seq::IndexedRandom;
use rand::Rng;

/// The text a constraint contributes to `{value}` in a phrasing.
pub fn value_text(c: &Constraint, catalog: &Catalog) -> String {
    match c.kind {
        ConstraintKind::Persona => catalog
            .persona(&c.value)
            .map(|p| p.description.clone())
            .unwrap_or_else(|| c.value.clone()),
        ConstraintKind::Format => catalog
            .format(&c.value)
            .map(|r| r.render(c.param.as_deref()))
            .unwrap_or_else(|| c.value.clone()),
        _ => c.value.clone(),
    }
}

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
            let value = value_text(c, catalog);
            let Some(p) = catalog.phrasings.of(&c.kind) else {
                return format!("{}: {value}.", c.kind);
            };
            let pattern = if terse {
                &p.terse
            } else {
                p.verbose.choose(rng).unwrap_or(&p.terse)
            };
            tidy(&pattern.replace("{value}", &value))
        })
        .collect();
    parts.join(" ")
}

/// A value ending in punctuation inside a phrasing ending in "." reads `..`; drop one.
fn tidy(s: &str) -> String {
    for p in ["?.", "!.", "..", ".\"."] {
        if let Some(head) = s.strip_suffix(p) {
            return format!("{head}{}", &p[..p.len() - 1]);
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
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
