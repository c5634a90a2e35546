//! Masking a whole dataset file: records stream in, are masked in parallel batches, and
//! the samples are written in input order by a writer thread that encodes one batch while
//! the next is masked.
//!
//! [`mask_file`] is the whole job; progress is reported through [`Progress`], so that a
//! caller can show a progress bar (or nothing) without this module knowing how.

use super::export::Export;
use super::{MaskError, MaskedRecord, Masker};
use crate::dataset::{read_dialogues, ExportWriter, Format, Location, Records};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// One file a masking run writes: where, in which file format, in which layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where the file appears.
    pub path: PathBuf,
    /// JSON lines or Parquet.
    pub format: Format,
    /// The layout of its rows.
    pub export: Export,
}

/// Masks every record of `input` (JSONL or Parquet dialogues) into `out` (gatt's sample
/// layout), in input order; [`mask_to`] with one output.
///
/// # Errors
///
/// As [`mask_to`].
pub fn mask_file(
    masker: &Masker,
    input: &Path,
    out: &Path,
    out_format: Format,
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<Summary, PipelineError> {
    let output = Output {
        path: out.to_path_buf(),
        format: out_format,
        export: Export::Gatt,
    };
    mask_to(masker, input, &[output], on_error, progress)
}

/// Masks every record of `input` (JSONL or Parquet dialogues) once and writes the
/// samples to each of `outputs` in its layout, in input order: every export of a run
/// holds the same samples.
///
/// No output may be the input: the samples would replace the dialogues they came from.
/// An export that cannot express the masker's policy (see [`Export::refusal`]) is an
/// input error before anything is read.
///
/// Records are masked `BATCH` at a time on the rayon pool of the caller. The outputs
/// appear only when every record was handled and at least one sample was made; under
/// [`OnError::Fail`] the first record that cannot be read or masked stops the run.
pub fn mask_to(
    masker: &Masker,
    input: &Path,
    outputs: &[Output],
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<Summary, PipelineError> {
    for o in outputs {
        if let Some(why) = o.export.refusal(masker.options(), o.format) {
            return Err(Error::input(why).at(Location::in_file(&o.path)).into());
        }
        refuse_overwriting_input(input, &o.path)?;
    }
    let mut records = read_dialogues(input)?;
    let mut writers = outputs
        .iter()
        .map(|o| ExportWriter::create(&o.path, o.format, o.export))
        .collect::<Result<Vec<_>>>()?;
    let stamp = masker.tokenizer_stamp();
    for w in &mut writers {
        w.stamp(&stamp);
    }
    let mut summary = Summary::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<MaskedRecord>>(WRITE_QUEUE);
    let written = std::thread::scope(|scope| -> Result<Vec<ExportWriter>, PipelineError> {
        let writer_thread = scope.spawn(move || -> Result<Vec<ExportWriter>> {
            for batch in rx {
                for record in &batch {
                    for w in &mut writers {
                        w.write(record)?;
                    }
                }
            }
            Ok(writers)
        });
        let masked = mask_batches(masker, &mut records, on_error, &mut summary, progress, &tx);
        drop(tx);
        let writers = writer_thread
            .join()
            .expect("the writer thread does not panic");
        masked?;
        Ok(writers?)
    });
    let writers = written?;
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
    for w in writers {
        w.finish()?;
    }
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
    tx: &SyncSender<Vec<MaskedRecord>>,
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
                Ok(record) => {
                    for e in &record.skipped {
                        *summary
                            .skipped_samples
                            .entry(e.reason.as_str())
                            .or_default() += 1;
                    }
                    for s in &record.samples {
                        summary.samples += 1;
                        summary.tokens += s.sample.n_tokens();
                        summary.loss_tokens += s.sample.n_loss_tokens();
                    }
                    out.push(record);
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
    if crate::dataset::would_replace(out, input) {
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
