//! Where the user's messages come from.

use gatt::Result;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::path::Path;

/// The user's side of the synthesized dialogues: a message bank, or the user turns of
/// an existing dataset. With [`crate::SynthOptions::user_sim`], only the first turn
/// comes from here.
pub enum UserSource {
    /// Distinct messages drawn from a bank (the built-in one by default).
    Bank(Vec<String>),
    /// The user turns of existing dialogues, dialogue `i` reusing record `i mod n`
    /// (their assistant turns are regenerated).
    Dialogues(Vec<Vec<String>>),
}

impl UserSource {
    /// Reads the user turns of a JSONL/Parquet/ShareGPT dataset.
    pub fn from_file(path: &Path) -> Result<Self> {
        let users: Vec<Vec<String>> = gatt::dataset::read_all(path)?
            .into_iter()
            .map(|d| {
                d.messages
                    .into_iter()
                    .filter(|m| m.role == gatt::Role::User && !m.content.trim().is_empty())
                    .map(|m| m.content)
                    .collect::<Vec<_>>()
            })
            .filter(|u| !u.is_empty())
            .collect();
        if users.is_empty() {
            return Err(gatt::Error::input(format!(
                "{}: no user turns found (user turns come from dialogues with user messages)",
                path.display()
            )));
        }
        Ok(UserSource::Dialogues(users))
    }

    /// Records with fewer than `turns` user turns, and all records: a dialogue built on
    /// a short record ends early, which `gatt synth` warns about.
    pub fn short_records(&self, turns: usize) -> (usize, usize) {
        match self {
            UserSource::Bank(_) => (0, 0),
            UserSource::Dialogues(d) => (d.iter().filter(|u| u.len() < turns).count(), d.len()),
        }
    }

    /// Up to `turns` user messages for dialogue `index`. From a bank: distinct messages
    /// drawn with `rng` (repeating only when the bank is smaller than `turns`); from
    /// dialogues: the first `turns` of record `index mod n`, without drawing.
    pub fn turns_for<R: Rng>(&self, rng: &mut R, index: usize, turns: usize) -> Vec<String> {
        match self {
            UserSource::Bank(bank) => {
                let mut out: Vec<String> = bank
                    .choose_multiple(rng, turns.min(bank.len()))
                    .cloned()
                    .collect();
                // A bank smaller than the dialogue repeats messages rather than cutting it short.
                while out.len() < turns && !bank.is_empty() {
                    out.push(bank.choose(rng).cloned().unwrap_or_default());
                }
                out
            }
            UserSource::Dialogues(d) => d[index % d.len()].iter().take(turns).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn short_records_are_counted_and_end_early() {
        let users = UserSource::Dialogues(vec![vec!["a".into(); 4], vec!["b".into(); 8]]);
        assert_eq!(users.short_records(8), (1, 2));
        assert_eq!(users.short_records(4), (0, 2));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(users.turns_for(&mut rng, 0, 8).len(), 4);
        assert_eq!(users.turns_for(&mut rng, 1, 8).len(), 8);
        let bank = UserSource::Bank(vec!["x".into(), "y".into()]);
        assert_eq!(bank.short_records(8), (0, 0));
        assert_eq!(bank.turns_for(&mut rng, 0, 8).len(), 8);
    }
}
