//! Datasets on disk: dialogue records and masked samples, as JSONL or Parquet.
//!
//! Readers stream (a JSONL line or a Parquet slice at a time) and report errors by
//! file, line, row and field ([`Location`]: rows are 0-based record indices, the
//! numbers `gatt inspect --row` takes; lines are 1-based, as editors count). Writers
//! write to a temporary file and rename it into place only when the whole dataset is
//! written, so a crash never leaves a partial output.

mod atomic;
mod json;
mod jsonl;
mod lock;
mod parquet;
mod parquet_out;
mod raw;
mod samples;
mod stamp;

/// Where a record sits in its file: the file, its 0-based `row` (record index) and, in
/// JSONL, its 1-based `line`; the place errors carry.
pub use crate::error::Location;
pub use atomic::{
    check_user_dir, refuse_overwriting_inputs, remove_live_temporaries, would_replace, write_dir,
    write_file, write_json, write_user_dir, AtomicFile,
};
pub use json::read_json;
pub use lock::{FolderLock, LOCK_FILE};
pub use stamp::{read_stamp, TokenizerStamp, TOKENIZER_KEY};

use crate::dialogue::Dialogue;
use crate::error::{Error, Result};

/// Opens `path` for reading; a folder is refused as the input error it is (reading one
/// fails on every read, which a reader skipping bad lines would repeat forever).
pub(crate) fn open_file(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::io(
            path,
            "read",
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    Ok(f)
}
use crate::mask::export::{self, Export};
use crate::mask::{MaskedRecord, MaskedSample};
use std::path::Path;

/// File format, named by the caller or found from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet (`.parquet`, `.pq`), one row a record.
    Parquet,
    /// JSON lines (`.jsonl`, `.json`, `.ndjson`), one record a line.
    Jsonl,
}

crate::names::named_values!(Format {
    Parquet => "parquet",
    Jsonl => "jsonl",
});

impl Format {
    /// `.parquet` and `.pq` are Parquet; `.jsonl`, `.json` and `.ndjson` are JSON lines.
    ///
    /// # Errors
    ///
    /// An input error for any other extension.
    pub fn from_path(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") | Some("pq") => Ok(Format::Parquet),
            Some("jsonl") | Some("json") | Some("ndjson") => Ok(Format::Jsonl),
            _ => Err(
                Error::input("unknown file type; use a .jsonl or .parquet extension")
                    .at(Location::in_file(path)),
            ),
        }
    }

    /// The extension of files in this format (no dot): `parquet` or `jsonl`.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

/// A stream of records with their place in the file.
pub type Records = Box<dyn Iterator<Item = Result<(Location, Dialogue)>> + Send>;

/// Streams the dialogue records of a JSONL or Parquet file (our records, or ShareGPT's
/// `conversations: [{from, value}]`).
pub fn read_dialogues(path: &Path) -> Result<Records> {
    match Format::from_path(path)? {
        Format::Jsonl => Ok(Box::new(jsonl::DialogueLines::open(path)?)),
        Format::Parquet => Ok(Box::new(parquet::DialogueRows::open(path)?)),
    }
}

/// Reads a whole dataset into memory (for small inputs such as user-turn banks).
pub fn read_all(path: &Path) -> Result<Vec<Dialogue>> {
    read_dialogues(path)?.map(|r| r.map(|(_, d)| d)).collect()
}

/// Writes dialogue records; [`DialogueWriter::finish`] makes the file appear.
pub enum DialogueWriter {
    /// One JSON record a line.
    Jsonl(jsonl::JsonlWriter),
    /// Parquet, with the Arrow types every reader takes (`string`, `list`).
    Parquet(Box<parquet_out::DialogueParquet>),
}

impl DialogueWriter {
    /// Starts `path` (written under a temporary name until [`DialogueWriter::finish`]).
    ///
    /// # Errors
    ///
    /// The folder or the temporary file cannot be created.
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        Ok(match format {
            Format::Jsonl => DialogueWriter::Jsonl(jsonl::JsonlWriter::create(path)?),
            Format::Parquet => {
                DialogueWriter::Parquet(Box::new(parquet_out::DialogueParquet::create(path)?))
            }
        })
    }

    /// Adds one record.
    ///
    /// # Errors
    ///
    /// A write failure; for Parquet, a text or list too long for 32-bit offsets.
    pub fn write(&mut self, d: &Dialogue) -> Result<()> {
        match self {
            DialogueWriter::Jsonl(w) => w.write(d),
            DialogueWriter::Parquet(w) => w.write(d),
        }
    }

    /// Flushes, syncs and renames the file into place: before this, `path` does not
    /// change.
    ///
    /// # Errors
    ///
    /// A write, sync or rename failure, naming the path.
    pub fn finish(self) -> Result<()> {
        match self {
            DialogueWriter::Jsonl(w) => w.finish(),
            DialogueWriter::Parquet(w) => w.finish(),
        }
    }
}

/// Writes masked samples: `id, input_ids, labels, attention_mask, n_tokens, n_loss_tokens`.
pub enum SampleWriter {
    /// One JSON sample a line.
    Jsonl(jsonl::JsonlWriter),
    /// Parquet, with the Arrow types every reader takes (`string`, `list`).
    Parquet(Box<parquet_out::SampleParquet>),
}

#[derive(serde::Serialize)]
struct SampleRow<'a> {
    id: &'a str,
    input_ids: &'a [u32],
    labels: &'a [i64],
    attention_mask: &'a [u8],
    n_tokens: usize,
    n_loss_tokens: usize,
}

impl SampleWriter {
    /// Starts `path` (written under a temporary name until [`SampleWriter::finish`]).
    ///
    /// # Errors
    ///
    /// The folder or the temporary file cannot be created.
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        Ok(match format {
            Format::Jsonl => SampleWriter::Jsonl(jsonl::JsonlWriter::create(path)?),
            Format::Parquet => {
                SampleWriter::Parquet(Box::new(parquet_out::SampleParquet::create(path)?))
            }
        })
    }

    /// Stamps the file with the tokenizer its samples were made with ([`TokenizerStamp`]);
    /// JSON lines have no place for it and are left as they are.
    pub fn stamp(&mut self, stamp: &TokenizerStamp) {
        if let SampleWriter::Parquet(w) = self {
            w.stamp(stamp);
        }
    }

    /// Adds one sample, with its `n_tokens` and `n_loss_tokens`.
    ///
    /// # Errors
    ///
    /// A write failure; for Parquet, a sample of more than 2^31 - 1 tokens.
    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        match self {
            SampleWriter::Jsonl(w) => w.write(&SampleRow {
                id: &s.id,
                input_ids: &s.input_ids,
                labels: &s.labels,
                attention_mask: &s.attention_mask,
                n_tokens: s.n_tokens(),
                n_loss_tokens: s.n_loss_tokens(),
            }),
            SampleWriter::Parquet(w) => w.write(s),
        }
    }

    /// Flushes, syncs and renames the file into place: before this, `path` does not
    /// change.
    ///
    /// # Errors
    ///
    /// A write, sync or rename failure, naming the path.
    pub fn finish(self) -> Result<()> {
        match self {
            SampleWriter::Jsonl(w) => w.finish(),
            SampleWriter::Parquet(w) => w.finish(),
        }
    }
}

/// Writes one export of masked records ([`Export`]): gatt's samples, openai JSON lines,
/// prompt-completion rows or tokenized rows, one per sample.
pub struct ExportWriter {
    export: Export,
    out: ExportOut,
}

enum ExportOut {
    Samples(SampleWriter),
    Jsonl(jsonl::JsonlWriter),
    PromptCompletion(Box<parquet_out::PromptCompletionParquet>),
    Tokenized(Box<parquet_out::TokenizedParquet>),
}

impl ExportWriter {
    /// Starts `path` (written under a temporary name until [`ExportWriter::finish`]).
    ///
    /// # Errors
    ///
    /// An input error for the openai export to Parquet (it is JSON lines only); the
    /// folder or the temporary file cannot be created.
    pub fn create(path: &Path, format: Format, export: Export) -> Result<Self> {
        let out = match (export, format) {
            (Export::Gatt, _) => ExportOut::Samples(SampleWriter::create(path, format)?),
            (Export::Openai, Format::Parquet) => {
                return Err(Error::input(
                    "the openai export is JSON lines (the OpenAI fine-tuning format); write \
                     it to a .jsonl file",
                )
                .at(Location::in_file(path)))
            }
            (_, Format::Jsonl) => ExportOut::Jsonl(jsonl::JsonlWriter::create(path)?),
            (Export::PromptCompletion, Format::Parquet) => ExportOut::PromptCompletion(Box::new(
                parquet_out::PromptCompletionParquet::create(path)?,
            )),
            (Export::Tokenized, Format::Parquet) => {
                ExportOut::Tokenized(Box::new(parquet_out::TokenizedParquet::create(path)?))
            }
        };
        Ok(ExportWriter { export, out })
    }

    /// Stamps the file with the tokenizer its samples were made with ([`TokenizerStamp`]):
    /// gatt's samples and the tokenized export, in Parquet; other layouts hold text.
    pub fn stamp(&mut self, stamp: &TokenizerStamp) {
        match &mut self.out {
            ExportOut::Samples(w) => w.stamp(stamp),
            ExportOut::Tokenized(w) => w.stamp(stamp),
            ExportOut::Jsonl(_) | ExportOut::PromptCompletion(_) => {}
        }
    }

    /// Adds the samples of one record, in order.
    ///
    /// # Errors
    ///
    /// A write failure; for Parquet, a sample or text too long for 32-bit offsets.
    pub fn write(&mut self, record: &MaskedRecord) -> Result<()> {
        for s in &record.samples {
            match (&mut self.out, self.export) {
                (ExportOut::Samples(w), _) => w.write(&s.sample)?,
                (ExportOut::Jsonl(w), Export::Openai) => w.write(&export::openai(record, s))?,
                (ExportOut::Jsonl(w), Export::PromptCompletion) => {
                    w.write(&export::prompt_completion(record, s))?
                }
                (ExportOut::Jsonl(w), _) => w.write(&export::tokenized(s))?,
                (ExportOut::PromptCompletion(w), _) => {
                    w.write(&s.sample.id, &export::prompt_completion(record, s))?
                }
                (ExportOut::Tokenized(w), _) => w.write(&s.sample)?,
            }
        }
        Ok(())
    }

    /// Flushes, syncs and renames the file into place: before this, `path` does not
    /// change.
    ///
    /// # Errors
    ///
    /// A write, sync or rename failure, naming the path.
    pub fn finish(self) -> Result<()> {
        match self.out {
            ExportOut::Samples(w) => w.finish(),
            ExportOut::Jsonl(w) => w.finish(),
            ExportOut::PromptCompletion(w) => w.finish(),
            ExportOut::Tokenized(w) => w.finish(),
        }
    }
}

/// Reads masked samples back (for `gatt inspect` and training), in file order: sample
/// `i` of the result is row `i` of the file, as errors and `gatt inspect --row` count.
///
/// A sample that is not one (a missing or mistyped column, a negative token id) is an
/// input error naming its file, line (JSONL), row and field. Parquet is read straight
/// from `path` into memory, column by column.
pub fn read_samples(path: &Path) -> Result<Vec<MaskedSample>> {
    match Format::from_path(path)? {
        Format::Parquet => samples::read_parquet(path),
        Format::Jsonl => samples::read_jsonl(path),
    }
}

#[cfg(test)]
mod tests;
