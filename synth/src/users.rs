//! Where the user's messages come from.

use gatt::Result;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::path::Path;

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
                "{}: no user turns found (--users needs dialogues with user messages)",
                path.display()
            )));
        }
        Ok(UserSource::Dialogues(users))
    }

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
