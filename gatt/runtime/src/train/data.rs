//! Masked samples -> training batches: validated once, grouped by a token budget,
//! ordered by a seeded shuffle that is a pure function of (seed, epoch), so a resumed
//! run sees exactly the batches an uninterrupted one would.

use gatt::error::Location;
use gatt::mask::{MaskedSample, IGNORE};
use gatt::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;

/// One sample, as the trainer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids of the whole sample (`input_ids`).
    pub ids: Vec<u32>,
    /// One label per id, aligned with `ids` (not shifted): the token at that position
    /// where it carries loss, -100 elsewhere (PyTorch cross-entropy's `ignore_index`,
    /// [`IGNORE`]).
    pub labels: Vec<i64>,
}

impl Example {
    /// Positions that predict a label: `(j, labels[j + 1])` (labels are aligned with
    /// the inputs and shifted here, as in Hugging Face trainers).
    pub fn targets(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        (0..self.ids.len().saturating_sub(1)).filter_map(|j| {
            let l = self.labels[j + 1];
            (l != IGNORE).then_some((j, l as u32))
        })
    }

    /// Positions that predict a label (see [`Example::targets`]).
    pub fn n_targets(&self) -> usize {
        self.targets().count()
    }
}

/// Samples left out of training, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// No label other than -100 after the shift: nothing to learn.
    pub no_loss_tokens: usize,
    /// Longer than the length limit of the run (or the model's context).
    pub too_long: usize,
}

/// Reads and checks a masked dataset against the model it will train.
///
/// A sample that does not fit the model is an input error at its file and 0-based row,
/// the row the inspect command shows (e.g. ``m.parquet: row 3 (id `x`): field
/// `input_ids[5]`: ...``).
///
/// `vocab` bounds every token id; `stop_ids` are the model's end-of-turn tokens: the
/// last loss token of a GAtt sample is the reply's end-of-turn marker, so a sample whose
/// last loss token is none of them was masked with another tokenizer or template.
/// Samples without a loss token, or longer than `max_len` tokens, are skipped and counted.
///
/// # Errors
///
/// An input error for an unreadable file, an empty one, a sample that does not fit the
/// model, or when no sample is left to train on.
pub fn load(
    path: &Path,
    vocab: usize,
    stop_ids: &[u32],
    max_len: usize,
) -> Result<(Vec<Example>, Skipped)> {
    let samples = gatt::dataset::read_samples(path)?;
    if samples.is_empty() {
        return Err(Error::input("no samples").at(Location::in_file(path)));
    }
    let mut out = Vec::with_capacity(samples.len());
    let mut skipped = Skipped::default();
    for (row, s) in samples.into_iter().enumerate() {
        check(path, row, &s, vocab, stop_ids)?;
        let ex = Example {
            ids: s.input_ids,
            labels: s.labels,
        };
        if ex.n_targets() == 0 {
            skipped.no_loss_tokens += 1;
        } else if ex.ids.len() > max_len {
            skipped.too_long += 1;
        } else {
            out.push(ex);
        }
    }
    if out.is_empty() {
        return Err(Error::input(format!(
            "{}: no trainable sample (without loss tokens: {}, longer than {max_len} tokens: {})",
            path.display(),
            skipped.no_loss_tokens,
            skipped.too_long
        )));
    }
    Ok((out, skipped))
}

/// Checks sample `row` (0-based, as the inspect command counts) against the
/// model; an error names the file, row, id and field.
pub(crate) fn check(
    path: &Path,
    row: usize,
    s: &MaskedSample,
    vocab: usize,
    stop_ids: &[u32],
) -> Result<()> {
    let bad = |field: String, msg: String| {
        Err(Error::input(msg).at(Location::in_file(path)
            .at_row(row)
            .with_id(&s.id)
            .with_field(field)))
    };
    if s.labels.len() != s.input_ids.len() {
        return bad(
            "labels".into(),
            format!(
                "{} entries but input_ids has {}",
                s.labels.len(),
                s.input_ids.len()
            ),
        );
    }
    if let Some((j, id)) = s
        .input_ids
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return bad(
            format!("input_ids[{j}]"),
            format!(
                "{id} is outside the model's vocabulary ({vocab} tokens); the data was \
                 tokenized for another model"
            ),
        );
    }
    if let Some((j, l)) = s
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l != IGNORE && (l < 0 || l as usize >= vocab))
    {
        return bad(
            format!("labels[{j}]"),
            format!("{l} is not a token id nor -100"),
        );
    }
    if let Some((j, (&l, &id))) = s
        .labels
        .iter()
        .zip(&s.input_ids)
        .enumerate()
        .find(|(_, (&l, &id))| l != IGNORE && l != i64::from(id))
    {
        return bad(
            format!("labels[{j}]"),
            format!(
                "{l} differs from input_ids[{j}] ({id}): labels are the input ids where \
                 there is loss and -100 elsewhere, unshifted (the trainer shifts them)"
            ),
        );
    }
    if let Some((j, &last)) = s
        .labels
        .iter()
        .enumerate()
        .rev()
        .find(|(_, &l)| l != IGNORE)
    {
        // A sample of this model's chat template ends its reply with an end-of-turn
        // token; one whose final reply was cut (`--cut-replies drop-eot`) or that trains
        // every token (`--policy all`) may not, but still holds one in its earlier text.
        let holds_end_of_turn = s.input_ids.iter().any(|t| stop_ids.contains(t));
        if !stop_ids.is_empty() && !stop_ids.contains(&(last as u32)) && !holds_end_of_turn {
            return bad(
                format!("labels[{j}]"),
                format!(
                    "the last loss token ({last}) is not one of the model's end-of-turn \
                     tokens {stop_ids:?}, and none occurs in the sample; the data was masked \
                     with another tokenizer or chat template (mask it again with the \
                     tokenizer and template of the model you train)"
                ),
            );
        }
    }
    Ok(())
}

/// Indices of examples, grouped so that (longest x count) stays within `budget` tokens.
pub type Batch = Vec<usize>;

/// The batches of one epoch. Examples are shuffled, then sorted by length within
/// windows of 64 (less padding, still random), cut into token-budget batches, and the
/// batches shuffled again.
pub fn epoch_batches(examples: &[Example], budget: usize, seed: u64, epoch: usize) -> Vec<Batch> {
    // Stream: TrainShuffle (parent: the training seed, index: the epoch).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(gatt::seed::derive(
        seed,
        gatt::seed::Stream::TrainShuffle,
        epoch as u64,
    ));
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut rng);
    for w in order.chunks_mut(64) {
        w.sort_by_key(|&i| examples[i].ids.len());
    }
    let mut batches = Vec::new();
    let mut cur: Batch = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = examples[i].ids.len();
        let l = longest.max(len);
        if !cur.is_empty() && l * (cur.len() + 1) > budget {
            batches.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(len);
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(len: usize) -> Example {
        Example {
            ids: vec![1; len],
            labels: (0..len)
                .map(|j| if j + 2 >= len { 1 } else { IGNORE })
                .collect(),
        }
    }

    #[test]
    fn batches_respect_the_budget_and_cover_every_example_once() {
        let examples: Vec<Example> = (0..200).map(|i| ex(5 + (i * 37) % 90)).collect();
        let batches = epoch_batches(&examples, 400, 7, 0);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| examples[i].ids.len()).max().unwrap();
            assert!(b.len() == 1 || longest * b.len() <= 400);
        }
        assert_eq!(batches, epoch_batches(&examples, 400, 7, 0));
        assert_ne!(batches, epoch_batches(&examples, 400, 7, 1));
    }

    #[test]
    fn a_bad_sample_is_named_by_the_row_inspect_shows() {
        use gatt::dataset::{read_samples, Format, SampleWriter};
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Parquet, Format::Jsonl] {
            let path = dir.path().join(format!("m.{}", format.extension()));
            let mut w = SampleWriter::create(&path, format).unwrap();
            for (id, last) in [("ok", 2), ("ok2", 2), ("big", 999)] {
                w.write(&MaskedSample {
                    id: id.into(),
                    input_ids: vec![1, last],
                    labels: vec![IGNORE, 2],
                    attention_mask: vec![1, 1],
                })
                .unwrap();
            }
            w.finish().unwrap();
            let e = load(&path, 100, &[2], 10).unwrap_err();
            assert!(e.is_input());
            let loc = e.location().unwrap();
            assert_eq!(loc.row, Some(2), "{e}");
            assert_eq!(loc.field.as_deref(), Some("input_ids[1]"));
            // Row 2 of the file, as the inspect command shows it, is the one at fault.
            assert_eq!(read_samples(&path).unwrap()[2].id, "big");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "{}: row 2 (id `big`): field `input_ids[1]`: 999 ",
                    path.display()
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn targets_are_shifted_labels() {
        let e = Example {
            ids: vec![10, 11, 12, 13],
            labels: vec![IGNORE, IGNORE, 12, 13],
        };
        assert_eq!(e.targets().collect::<Vec<_>>(), vec![(1, 12), (2, 13)]);
    }
}
