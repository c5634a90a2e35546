//! Masking a whole dataset file: records stream in, are masked in parallel batches, and
//! the samples are written in input order by a writer thread that encodes one batch while
//! the next is masked.
//!
//! [`mask_file`] is the whole job; progress is reported through [`Progress`], so that a
//! caller can show a progress bar (or nothing) without this module knowing how.

use super::{MaskError, MaskedSample, Masker};
use crate::dataset::{read_dialogues, Format, Location, Records, SampleWriter};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::SyncSender;

/// Records masked per parallel batch.
const BATCH: usize = 1024;

/// Batches of samples waiting for the writer thread (bounds the memory in flight).
const WRITE_QUEUE: usize = 2;

/// What to do with a record that cannot be read or masked exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop at the first bad record.
    #[default]
    Fail,
    /// Skip it and count it by reason in [`Summary::skipped`].
    Skip,
}

crate::names::named_values!(OnError {
    Fail => "fail",
    Skip => "skip",
});

/// Counts of a masking run (its JSON form is what `gatt mask` prints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records read (masked or skipped).
    pub records: usize,
    /// Samples written (a record gives several under `Policy::GattExpand`).
    pub samples: usize,
    /// Tokens of all samples written.
    pub tokens: usize,
    /// Of those, tokens that carry loss.
    pub loss_tokens: usize,
    /// Records skipped, by reason: a [`super::SkipReason::as_str`] name, or `unreadable`.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Under `Policy::GattExpand`: samples of records otherwise masked that were skipped
    /// (one reply that cannot be masked exactly), by reason. Not in the JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_samples: BTreeMap<&'static str, usize>,
}

/// The `skipped` key of records that could not be read.
pub const UNREADABLE: &str = "unreadable";

/// Receives the progress of [`mask_file`], on the calling thread. Both methods do
/// nothing by default; `()` is the silent implementation.
pub trait Progress {
    /// Called after each batch with the counts so far.
    fn update(&self, _summary: &Summary) {}

    /// A record that could not be read was skipped (only under [`OnError::Skip`]).
    fn skipped_unreadable(&self, _error: &Error) {}
}

impl Progress for () {}

/// Why [`mask_file`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A record could not be masked exactly (under [`OnError::Fail`]); `error.reason`
    /// says which check failed.
    #[error("{location} (id {id}): {error}")]
    Record {
        /// Where the record is in the input file (boxed: the error stays small).
        location: Box<Location>,
        /// The record's id.
        id: String,
        /// What is wrong with it.
        error: MaskError,
    },
    /// Anything else: the input or output failed, a record could not be read, or no
    /// record could be masked (then the output is not written).
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<PipelineError> for Error {
    /// A record that cannot be masked is the input's fault.
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Record {
                location,
                id,
                error,
            } => Error::input(error.to_string()).at(location.with_id(id)),
            PipelineError::Other(e) => e,
        }
    }
}

/// Masks every record of `input` (JSONL or Parquet dialogues) into `out`, in input order.
///
/// The output must not be the input: the samples would replace the dialogues they came
/// from.
///
/// Records are masked `BATCH` at a time on the rayon pool of the caller. The output
/// appears only when every record was handled and at least one sample was made; under
/// [`OnError::Fail`] the first record that cannot be read or masked stops the run.
pub fn mask_file(
    masker: &Masker,
    input: &Path,
    out: &Path,
    out_format: Format,
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<Summary, PipelineError> {
    refuse_overwriting_input(input, out)?;
    let mut records = read_dialogues(input)?;
    let mut writer = SampleWriter::create(out, out_format)?;
    let mut summary = Summary::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<MaskedSample>>(WRITE_QUEUE);
    let written = std::thread::scope(|scope| -> Result<SampleWriter, PipelineError> {
        let writer_thread = scope.spawn(move || -> Result<SampleWriter> {
            for batch in rx {
                for s in &batch {
                    writer.write(s)?;
                }
            }
            Ok(writer)
        });
        let masked = mask_batches(masker, &mut records, on_error, &mut summary, progress, &tx);
        drop(tx);
        let writer = writer_thread
            .join()
            .expect("the writer thread does not panic");
        masked?;
        Ok(writer?)
    });
    let writer = written?;
    if summary.samples == 0 {
        let reasons: Vec<String> = summary
            .skipped
            .iter()
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        return Err(Error::input(format!(
            "{}: no record could be masked ({} records; skipped: {}); output not written",
            input.display(),
            summary.records,
            reasons.join(", ")
        ))
        .into());
    }
    writer.finish()?;
    Ok(summary)
}

/// Masks `records` batch by batch in parallel, counting into `summary` and sending the
/// samples to the writer, in input order.
fn mask_batches(
    masker: &Masker,
    records: &mut Records,
    on_error: OnError,
    summary: &mut Summary,
    progress: &dyn Progress,
    tx: &SyncSender<Vec<MaskedSample>>,
) -> Result<(), PipelineError> {
    use rayon::prelude::*;
    loop {
        let batch: Vec<_> = records.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let results: Vec<_> = batch
            .into_par_iter()
            .map(|r| r.map(|(loc, d)| (masker.mask_record(&d), loc, d.id)))
            .collect();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            summary.records += 1;
            let (result, location, id) = match r {
                Ok(x) => x,
                Err(e) if on_error == OnError::Skip => {
                    *summary.skipped.entry(UNREADABLE).or_default() += 1;
                    progress.skipped_unreadable(&e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let result = result.and_then(|masked| match (masked.skipped.first(), on_error) {
                (Some(e), OnError::Fail) => Err(e.clone()),
                _ => Ok(masked),
            });
            match result {
                Ok(masked) => {
                    for e in &masked.skipped {
                        *summary
                            .skipped_samples
                            .entry(e.reason.as_str())
                            .or_default() += 1;
                    }
                    for s in masked.samples {
                        summary.samples += 1;
                        summary.tokens += s.n_tokens();
                        summary.loss_tokens += s.n_loss_tokens();
                        out.push(s);
                    }
                }
                Err(e) if on_error == OnError::Skip => {
                    *summary.skipped.entry(e.reason.as_str()).or_default() += 1;
                }
                Err(error) => {
                    return Err(PipelineError::Record {
                        location: Box::new(location),
                        id,
                        error,
                    })
                }
            }
        }
        // A closed channel means the writer failed; its error is reported by the caller.
        if tx.send(out).is_err() {
            return Ok(());
        }
        progress.update(summary);
    }
}

/// An input error when `out` names the file `input` is (also through links or `..`).
fn refuse_overwriting_input(input: &Path, out: &Path) -> Result<()> {
    let same = match (std::fs::canonicalize(input), std::fs::canonicalize(out)) {
        (Ok(i), Ok(o)) => i == o,
        _ => false,
    };
    if same {
        return Err(Error::input(
            "the output is the input file: the samples would replace the dialogues; \
             write them to another file",
        )
        .at(Location::in_file(out)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::tests::smollm2;
    use crate::mask::{MaskOptions, SkipReason};
    use std::cell::Cell;

    /// Two good records around one whose reply the template would merge into its
    /// prefix (a seam merge), and a final unreadable line.
    const RECORDS: &str = concat!(
        r#"{"id":"a","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}"#,
        "\n",
        r#"{"id":"bad","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"  indented"}]}"#,
        "\n",
        r#"{"id":"b","messages":[{"role":"user","content":"Bye"},{"role":"assistant","content":"Goodbye."}]}"#,
        "\n",
    );

    fn input(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("in.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Counts the calls it gets.
    #[derive(Default)]
    struct Counting {
        updates: Cell<usize>,
        unreadable: Cell<usize>,
    }

    impl Progress for Counting {
        fn update(&self, _: &Summary) {
            self.updates.set(self.updates.get() + 1);
        }
        fn skipped_unreadable(&self, _: &Error) {
            self.unreadable.set(self.unreadable.get() + 1);
        }
    }

    #[test]
    fn skip_counts_bad_records_and_keeps_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{RECORDS}not json\n");
        let out = dir.path().join("out.jsonl");
        let m = smollm2(MaskOptions::default());
        let p = Counting::default();
        let s = mask_file(
            &m,
            &input(dir.path(), &text),
            &out,
            Format::Jsonl,
            OnError::Skip,
            &p,
        )
        .unwrap();
        assert_eq!((s.records, s.samples), (4, 2));
        assert_eq!(s.skipped[SkipReason::SeamMerge.as_str()], 1);
        assert_eq!(s.skipped[UNREADABLE], 1);
        assert_eq!((p.updates.get(), p.unreadable.get()), (1, 1));
        let samples = crate::dataset::read_samples(&out).unwrap();
        let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            s.tokens,
            samples.iter().map(|s| s.n_tokens()).sum::<usize>()
        );
    }

    #[test]
    fn fail_names_the_record_and_the_reason_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let m = smollm2(MaskOptions::default());
        let e = mask_file(
            &m,
            &input(dir.path(), RECORDS),
            &out,
            Format::Jsonl,
            OnError::Fail,
            &(),
        )
        .unwrap_err();
        let PipelineError::Record {
            location,
            id,
            error,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(
            (location.line, location.row, id.as_str()),
            (Some(2), Some(1), "bad")
        );
        assert_eq!(error.reason, SkipReason::SeamMerge);
        let msg = Error::from(e).to_string();
        assert!(msg.contains("in.jsonl:2 (row 1, id `bad`)"), "{msg}");
        assert!(!out.exists());
    }

    /// Under gatt-expand, a reply that cannot be masked costs its own sample, counted;
    /// the record's other samples are written.
    #[test]
    fn expand_skips_only_the_sample_that_cannot_be_masked() {
        let dir = tempfile::tempdir().unwrap();
        let text = concat!(
            r#"{"id":"a","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"  indented"},{"role":"user","content":"Bye"},{"role":"assistant","content":"Goodbye."}]}"#,
            "\n",
        );
        let out = dir.path().join("out.jsonl");
        let m = smollm2(MaskOptions {
            policy: crate::mask::Policy::GattExpand,
            ..Default::default()
        });
        let s = mask_file(
            &m,
            &input(dir.path(), text),
            &out,
            Format::Jsonl,
            OnError::Skip,
            &(),
        )
        .unwrap();
        assert_eq!((s.records, s.samples), (1, 1));
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        assert_eq!(s.skipped_samples[SkipReason::SeamMerge.as_str()], 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["skipped_samples"]["seam_merge"], 1);
        let samples = crate::dataset::read_samples(&out).unwrap();
        assert_eq!(samples[0].id, "a#2");
        // Under --on-error fail the record stops the run, naming the reply.
        let e = mask_file(
            &m,
            &input(dir.path(), text),
            &out,
            Format::Jsonl,
            OnError::Fail,
            &(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("messages[1]"), "{e}");
    }

    #[test]
    fn nothing_masked_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let m = smollm2(MaskOptions::default());
        let e = mask_file(
            &m,
            &input(dir.path(), "not json\n"),
            &out,
            Format::Jsonl,
            OnError::Skip,
            &(),
        )
        .unwrap_err();
        let e = Error::from(e);
        assert!(e.is_input() && e.to_string().contains("no record could be masked"));
        assert!(e.to_string().contains("skipped: unreadable: 1"), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn on_error_names_round_trip() {
        for &v in OnError::ALL {
            assert_eq!(v.to_string().parse::<OnError>(), Ok(v));
        }
        assert!("ignore"
            .parse::<OnError>()
            .unwrap_err()
            .contains("fail, skip"));
    }
}
