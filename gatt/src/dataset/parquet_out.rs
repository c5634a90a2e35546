//! Parquet output: dialogue records and masked samples, with the Arrow types every
//! reader takes.
//!
//! A Parquet file stores, beside its columns, the Arrow schema readers should rebuild
//! (the `ARROW:schema` key). Polars' own writer (0.55) stores its in-memory types there,
//! `string_view` and `large_list`, which Hugging Face `datasets` 4.0 and older cannot
//! load and pyarrow's `Table.filter` cannot filter. Files here store `string` (`Utf8`,
//! 32-bit offsets) and `list` (32-bit offsets) instead, the types every Arrow reader has
//! had from the start. The Parquet columns are the same either way (UTF8 byte arrays,
//! three-level LIST groups): only the Arrow type a reader rebuilds differs.
//!
//! Columns are built straight from the records into Arrow arrays and encoded with
//! polars' Parquet encoder, one row group per batch; no polars frame is involved, so a
//! batch of any size, one row included, is written the same way.

use super::{AtomicFile, Location};
use crate::dialogue::{Dialogue, Message};
use crate::error::{Error, Result};
use crate::mask::export::PromptCompletion;
use crate::mask::MaskedSample;
use polars::error::PolarsError;
use polars_arrow::array::{Array, ListArray, MutableBinaryViewArray, PrimitiveArray, StructArray};
use polars_arrow::datatypes::{ArrowDataType, ArrowSchema, Field};
use polars_arrow::offset::{Offsets, OffsetsBuffer};
use polars_arrow::types::NativeType;
use polars_parquet::read::ParquetError;
use polars_parquet::write::{
    array_to_columns, get_dtype_encoding, CompressionOptions, Compressor, DynIter,
    DynStreamingIterator, Encoding, FallibleStreamingIterator, FileWriter, ParquetType,
    RowGroupIterColumns, StatisticsOptions, Version, WriteOptions,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Rows buffered before a row group is written.
pub(super) const CHUNK: usize = 4096;

/// The most bytes one text, and the most values one list (and one row group's list
/// column), can hold: Arrow's `string` and `list` types count them with 32-bit offsets.
const MAX_LEN: usize = i32::MAX as usize;

/// The Arrow type readers should rebuild for a column built as `dtype`: `string` for
/// text (`Utf8`), `binary` for bytes, `list` (32-bit offsets) for lists, at any depth.
///
/// Texts are built as `Utf8View`, the form polars' encoder takes (it has no `Utf8`
/// path); the Parquet column is the same for both.
pub(crate) fn stored_type(dtype: &ArrowDataType) -> ArrowDataType {
    use ArrowDataType as D;
    let field = |f: &Field| Field::new(f.name.clone(), stored_type(&f.dtype), f.is_nullable);
    match dtype {
        D::Utf8View | D::LargeUtf8 => D::Utf8,
        D::BinaryView | D::LargeBinary => D::Binary,
        D::List(f) | D::LargeList(f) => D::List(Box::new(field(f))),
        D::Struct(fields) => D::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// Text, as built (see [`stored_type`]).
fn text() -> ArrowDataType {
    ArrowDataType::Utf8View
}

/// A list of `item` (32-bit offsets).
fn list_of(item: ArrowDataType) -> ArrowDataType {
    ArrowDataType::List(Box::new(Field::new("item".into(), item, true)))
}

/// A struct of the named fields.
fn struct_of(fields: &[(&str, ArrowDataType)]) -> ArrowDataType {
    ArrowDataType::Struct(
        fields
            .iter()
            .map(|(name, dtype)| Field::new((*name).into(), dtype.clone(), true))
            .collect(),
    )
}

/// The columns of a dialogue file, as built: `id`, `messages` (a list of
/// `{role, content}`), `instruction`, `constraints` (a list of `{kind, value, param}`)
/// and `meta` (the record's meta object as a JSON string: free-form maps have no fixed
/// schema).
fn dialogue_columns() -> Vec<Field> {
    let message = struct_of(&[("role", text()), ("content", text())]);
    let constraint = struct_of(&[("kind", text()), ("value", text()), ("param", text())]);
    vec![
        Field::new("id".into(), text(), true),
        Field::new("messages".into(), list_of(message), true),
        Field::new("instruction".into(), text(), true),
        Field::new("constraints".into(), list_of(constraint), true),
        Field::new("meta".into(), text(), true),
    ]
}

/// The columns of a masked-sample file, as built: `id`, `input_ids` (a list of u32),
/// `labels` (a list of i64, -100 where no loss is taken), `attention_mask` (a list of
/// u8), `n_tokens` and `n_loss_tokens` (u32).
fn sample_columns() -> Vec<Field> {
    vec![
        Field::new("id".into(), text(), true),
        Field::new("input_ids".into(), list_of(ArrowDataType::UInt32), true),
        Field::new("labels".into(), list_of(ArrowDataType::Int64), true),
        Field::new("attention_mask".into(), list_of(ArrowDataType::UInt8), true),
        Field::new("n_tokens".into(), ArrowDataType::UInt32, true),
        Field::new("n_loss_tokens".into(), ArrowDataType::UInt32, true),
    ]
}

/// The columns of a prompt-completion file, as built: `prompt` and `completion`, each a
/// list of `{role, content}` (TRL's conversational prompt-completion layout).
fn prompt_completion_columns() -> Vec<Field> {
    let message = struct_of(&[("role", text()), ("content", text())]);
    vec![
        Field::new("prompt".into(), list_of(message.clone()), true),
        Field::new("completion".into(), list_of(message), true),
    ]
}

/// The columns of a tokenized file: exactly `input_ids`, `attention_mask` and `labels`,
/// lists of int64 (what `torch` takes as they are).
fn tokenized_columns() -> Vec<Field> {
    ["input_ids", "attention_mask", "labels"]
        .into_iter()
        .map(|name| Field::new(name.into(), list_of(ArrowDataType::Int64), true))
        .collect()
}

/// A Parquet file being written a row group at a time, appearing at its path only when
/// [`ParquetOut::finish`] is called.
struct ParquetOut {
    file: AtomicFile,
    /// Writes to a second handle on the file, buffered on its own.
    writer: FileWriter<BufWriter<Recording>>,
    /// The first I/O error the writer met: the Parquet writer reports it only as a
    /// "transport error", without the path or the cause (a full disk).
    io_error: IoErrorSlot,
    /// The columns' types as built, to check each batch against.
    built: Vec<ArrowDataType>,
    /// The Parquet type of each column.
    parquet: Vec<ParquetType>,
    /// The encodings of each column's leaves, chosen for the built types as polars does.
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
}

impl ParquetOut {
    /// A file at `path` (written under a temporary name until finished) with `columns`;
    /// the schema it stores has their [`stored_type`]s.
    fn create(path: &Path, columns: Vec<Field>) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        let io_error = IoErrorSlot::default();
        let handle = Recording {
            file: file
                .writer()
                .get_ref()
                .try_clone()
                .map_err(|e| Error::io(path, "write", e))?,
            error: io_error.clone(),
        };
        let stored: ArrowSchema = columns
            .iter()
            .map(|f| {
                let f = Field::new(f.name.clone(), stored_type(&f.dtype), f.is_nullable);
                (f.name.clone(), f)
            })
            .collect();
        let options = WriteOptions {
            statistics: StatisticsOptions::default(),
            compression: CompressionOptions::Zstd(None),
            version: Version::V1,
            data_page_size: None,
        };
        let writer =
            FileWriter::try_new(BufWriter::with_capacity(1 << 20, handle), stored, options)
                .map_err(|e| failed(path, &io_error, e))?;
        let parquet = writer.parquet_schema().fields().to_vec();
        Ok(ParquetOut {
            file,
            writer,
            io_error,
            encodings: columns
                .iter()
                .map(|f| get_dtype_encoding(&f.dtype))
                .collect(),
            built: columns.into_iter().map(|f| f.dtype).collect(),
            parquet,
            options,
        })
    }

    /// Where the file appears.
    fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes `columns`, `rows` long each, as one row group; nothing for 0 rows.
    fn write(&mut self, rows: usize, columns: Vec<Box<dyn Array>>) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let fits = columns.len() == self.built.len()
            && columns
                .iter()
                .zip(&self.built)
                .all(|(c, dtype)| c.len() == rows && c.dtype() == dtype);
        if !fits {
            return Err(Error::runtime(
                "internal error: a batch does not have the file's columns; nothing written",
            )
            .at(Location::in_file(self.path())));
        }
        let mut leaves = Vec::new();
        for ((array, parquet), encoding) in
            columns.into_iter().zip(&self.parquet).zip(&self.encodings)
        {
            let columns = array_to_columns(array, parquet.clone(), self.options, encoding)
                .map_err(|e| failed(self.file.path(), &self.io_error, e))?;
            for pages in columns {
                let pages = pages.map(|page| page.map_err(ParquetError::from));
                let compressed = Compressor::new(pages, self.options.compression, vec![])
                    .map_err(PolarsError::from);
                leaves.push(Ok(DynStreamingIterator::new(compressed)));
            }
        }
        let group: RowGroupIterColumns<'static, PolarsError> = DynIter::new(leaves.into_iter());
        self.writer
            .write(rows as u64, group)
            .map_err(|e| failed(self.file.path(), &self.io_error, e))
    }

    /// Writes the footer (with the stored Arrow schema) and moves the file into place.
    fn finish(mut self) -> Result<()> {
        let path = self.file.path().to_path_buf();
        self.writer
            .end(None)
            .map_err(|e| failed(&path, &self.io_error, e))?;
        self.writer
            .into_inner()
            .into_inner()
            .map_err(|e| Error::io(&path, "write", e.into_error()))?;
        self.file.commit()
    }
}

/// The error of a Parquet file that could not be written: the I/O error under it when
/// there was one (worded by [`Error::io`]: a full disk says so), else the writer's own.
fn failed(path: &Path, io_error: &IoErrorSlot, e: PolarsError) -> Error {
    if let Some(io) = io_error.take() {
        return Error::io(path, "write", io);
    }
    Error::runtime(format!("cannot write Parquet: {e}"))
        .at(Location::in_file(path))
        .with_source(e)
}

/// Where [`Recording`] keeps the first I/O error.
#[derive(Clone, Default)]
struct IoErrorSlot(Arc<Mutex<Option<std::io::Error>>>);

impl IoErrorSlot {
    /// Keeps `e` (the first one only) and gives the writer an equal error to report.
    fn keep(&self, e: std::io::Error) -> std::io::Error {
        let copy = match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        };
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        copy
    }

    /// The kept error, if any.
    fn take(&self) -> Option<std::io::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A file handle that keeps the first I/O error it meets in an [`IoErrorSlot`].
struct Recording {
    file: File,
    error: IoErrorSlot,
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).map_err(|e| self.error.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().map_err(|e| self.error.keep(e))
    }
}

/// A text column being built.
struct Texts(MutableBinaryViewArray<str>);

impl Texts {
    /// An empty column.
    fn new() -> Self {
        Texts(MutableBinaryViewArray::new())
    }

    /// Appends a text, or a null.
    fn push(&mut self, value: Option<&str>) {
        self.0.push(value)
    }

    /// The column so far, leaving this one empty.
    fn take(&mut self) -> Box<dyn Array> {
        std::mem::replace(&mut self.0, MutableBinaryViewArray::new())
            .freeze()
            .boxed()
    }
}

/// A list column of `values` with these per-row lengths (taken, leaving `lengths` empty).
fn list(lengths: &mut Vec<usize>, values: Box<dyn Array>) -> Result<Box<dyn Array>> {
    let offsets = Offsets::<i32>::try_from_lengths(std::mem::take(lengths).into_iter())?;
    let dtype = list_of(values.dtype().clone());
    Ok(ListArray::<i32>::try_new(dtype, OffsetsBuffer::from(offsets), values, None)?.boxed())
}

/// A struct column `rows` long with these fields.
fn structs(rows: usize, fields: Vec<(&str, Box<dyn Array>)>) -> Result<Box<dyn Array>> {
    let dtype = struct_of(
        &fields
            .iter()
            .map(|(name, a)| (*name, a.dtype().clone()))
            .collect::<Vec<_>>(),
    );
    let values = fields.into_iter().map(|(_, a)| a).collect();
    Ok(StructArray::try_new(dtype, rows, values, None)?.boxed())
}

/// A primitive column (taken, leaving `values` empty).
fn primitives<T: NativeType>(values: &mut Vec<T>) -> Box<dyn Array> {
    PrimitiveArray::from_vec(std::mem::take(values)).boxed()
}

/// An input error for a record too large for the file's types.
fn too_large(path: &Path, id: &str, what: String) -> Error {
    Error::input(format!(
        "{what}; Arrow's `string` and `list` types hold at most {MAX_LEN}; nothing written"
    ))
    .at(Location::in_file(path).with_id(id))
}

/// Dialogue records, built into typed columns a row group ([`CHUNK`] records) at a time.
pub struct DialogueParquet {
    out: ParquetOut,
    rows: usize,
    id: Texts,
    message_counts: Vec<usize>,
    role: Texts,
    content: Texts,
    instruction: Texts,
    constraint_counts: Vec<usize>,
    kind: Texts,
    value: Texts,
    param: Texts,
    meta: Texts,
}

impl DialogueParquet {
    /// A dialogue file at `path`, appearing there when [`DialogueParquet::finish`] is
    /// called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(DialogueParquet {
            out: ParquetOut::create(path, dialogue_columns())?,
            rows: 0,
            id: Texts::new(),
            message_counts: Vec::new(),
            role: Texts::new(),
            content: Texts::new(),
            instruction: Texts::new(),
            constraint_counts: Vec::new(),
            kind: Texts::new(),
            value: Texts::new(),
            param: Texts::new(),
            meta: Texts::new(),
        })
    }

    /// Adds one record (written with the next full row group, or at finish).
    ///
    /// # Errors
    ///
    /// An input error, naming the record, for a text over 2 GiB (more than a `string`
    /// holds); an error of the file for a row group that cannot be written.
    pub fn write(&mut self, d: &Dialogue) -> Result<()> {
        let meta = serde_json::to_string(&d.meta).map_err(|e| {
            Error::runtime(format!("cannot serialize: {e}"))
                .at(Location::in_file(self.out.path()).with_id(&d.id))
                .with_source(e)
        })?;
        let texts = [d.id.as_str(), &d.instruction, &meta]
            .into_iter()
            .chain(d.messages.iter().map(|m| m.content.as_str()))
            .chain(
                d.constraints
                    .iter()
                    .flat_map(|c| [c.kind.as_str(), &c.value, c.param.as_deref().unwrap_or("")]),
            );
        if let Some(n) = texts.map(str::len).find(|n| *n > MAX_LEN) {
            return Err(too_large(
                self.out.path(),
                &d.id,
                format!("a text of {n} bytes"),
            ));
        }
        self.id.push(Some(&d.id));
        self.message_counts.push(d.messages.len());
        for m in &d.messages {
            self.role.push(Some(m.role.as_str()));
            self.content.push(Some(&m.content));
        }
        self.instruction.push(Some(&d.instruction));
        self.constraint_counts.push(d.constraints.len());
        for c in &d.constraints {
            self.kind.push(Some(c.kind.as_str()));
            self.value.push(Some(&c.value));
            self.param.push(c.param.as_deref());
        }
        self.meta.push(Some(&meta));
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered records as one row group.
    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let n_messages = self.message_counts.iter().sum();
        let messages = structs(
            n_messages,
            vec![("role", self.role.take()), ("content", self.content.take())],
        )?;
        let n_constraints = self.constraint_counts.iter().sum();
        let constraints = structs(
            n_constraints,
            vec![
                ("kind", self.kind.take()),
                ("value", self.value.take()),
                ("param", self.param.take()),
            ],
        )?;
        let columns = vec![
            self.id.take(),
            list(&mut self.message_counts, messages)?,
            self.instruction.take(),
            list(&mut self.constraint_counts, constraints)?,
            self.meta.take(),
        ];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place; a file of
    /// no records has the columns and no rows.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}

/// Masked samples, built into typed list columns a row group at a time: [`CHUNK`]
/// samples, or fewer where their tokens would overflow a list column's 32-bit offsets.
pub struct SampleParquet {
    out: ParquetOut,
    rows: usize,
    id: Texts,
    ids_lengths: Vec<usize>,
    input_ids: Vec<u32>,
    labels_lengths: Vec<usize>,
    labels: Vec<i64>,
    mask_lengths: Vec<usize>,
    attention_mask: Vec<u8>,
    n_tokens: Vec<u32>,
    n_loss_tokens: Vec<u32>,
}

impl SampleParquet {
    /// A sample file at `path`, appearing there when [`SampleParquet::finish`] is called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(SampleParquet {
            out: ParquetOut::create(path, sample_columns())?,
            rows: 0,
            id: Texts::new(),
            ids_lengths: Vec::new(),
            input_ids: Vec::new(),
            labels_lengths: Vec::new(),
            labels: Vec::new(),
            mask_lengths: Vec::new(),
            attention_mask: Vec::new(),
            n_tokens: Vec::new(),
            n_loss_tokens: Vec::new(),
        })
    }

    /// Adds one sample (written with the next row group, or at finish).
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for one of more than 2^31 - 1 tokens or an id
    /// over 2 GiB (more than a `list` or `string` holds); an error of the file for a row
    /// group that cannot be written.
    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        let longest = s
            .input_ids
            .len()
            .max(s.labels.len())
            .max(s.attention_mask.len());
        if longest > MAX_LEN {
            let what = format!("a sample of {longest} tokens");
            return Err(too_large(self.out.path(), &s.id, what));
        }
        if s.id.len() > MAX_LEN {
            let what = format!("an id of {} bytes", s.id.len());
            return Err(too_large(self.out.path(), &s.id, what));
        }
        let buffered = self
            .input_ids
            .len()
            .max(self.labels.len())
            .max(self.attention_mask.len());
        if self.rows > 0 && buffered + longest > MAX_LEN {
            self.flush()?;
        }
        // Both fit: at most `MAX_LEN`, checked above.
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.id.push(Some(&s.id));
        self.ids_lengths.push(s.input_ids.len());
        self.input_ids.extend_from_slice(&s.input_ids);
        self.labels_lengths.push(s.labels.len());
        self.labels.extend_from_slice(&s.labels);
        self.mask_lengths.push(s.attention_mask.len());
        self.attention_mask.extend_from_slice(&s.attention_mask);
        self.n_tokens.push(count(s.n_tokens()));
        self.n_loss_tokens.push(count(s.n_loss_tokens()));
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered samples as one row group.
    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let input_ids = primitives(&mut self.input_ids);
        let labels = primitives(&mut self.labels);
        let attention_mask = primitives(&mut self.attention_mask);
        let columns = vec![
            self.id.take(),
            list(&mut self.ids_lengths, input_ids)?,
            list(&mut self.labels_lengths, labels)?,
            list(&mut self.mask_lengths, attention_mask)?,
            primitives(&mut self.n_tokens),
            primitives(&mut self.n_loss_tokens),
        ];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place; a file of
    /// no samples has the columns and no rows.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}

/// A list-of-messages column being built.
struct MessageLists {
    counts: Vec<usize>,
    role: Texts,
    content: Texts,
}

impl MessageLists {
    fn new() -> Self {
        MessageLists {
            counts: Vec::new(),
            role: Texts::new(),
            content: Texts::new(),
        }
    }

    fn push(&mut self, messages: &[Message]) {
        self.counts.push(messages.len());
        for m in messages {
            self.role.push(Some(m.role.as_str()));
            self.content.push(Some(&m.content));
        }
    }

    /// The column so far, leaving this one empty.
    fn take(&mut self) -> Result<Box<dyn Array>> {
        let n = self.counts.iter().sum();
        let messages = structs(
            n,
            vec![("role", self.role.take()), ("content", self.content.take())],
        )?;
        list(&mut self.counts, messages)
    }
}

/// Prompt-completion rows ([`prompt_completion_columns`]), a row group ([`CHUNK`] rows)
/// at a time.
pub struct PromptCompletionParquet {
    out: ParquetOut,
    rows: usize,
    prompt: MessageLists,
    completion: MessageLists,
}

impl PromptCompletionParquet {
    /// A file at `path`, appearing there when [`PromptCompletionParquet::finish`] is
    /// called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(PromptCompletionParquet {
            out: ParquetOut::create(path, prompt_completion_columns())?,
            rows: 0,
            prompt: MessageLists::new(),
            completion: MessageLists::new(),
        })
    }

    /// Adds the row of sample `id`.
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for a text over 2 GiB; an error of the file
    /// for a row group that cannot be written.
    pub fn write(&mut self, id: &str, row: &PromptCompletion<'_>) -> Result<()> {
        let messages = row.prompt.iter().chain(row.completion);
        if let Some(n) = messages.map(|m| m.content.len()).find(|n| *n > MAX_LEN) {
            return Err(too_large(
                self.out.path(),
                id,
                format!("a text of {n} bytes"),
            ));
        }
        self.prompt.push(row.prompt);
        self.completion.push(row.completion);
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let columns = vec![self.prompt.take()?, self.completion.take()?];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}

/// Tokenized rows ([`tokenized_columns`]): [`CHUNK`] samples a row group, or fewer where
/// their tokens would overflow a list column's 32-bit offsets.
pub struct TokenizedParquet {
    out: ParquetOut,
    rows: usize,
    lengths: [Vec<usize>; 3],
    input_ids: Vec<i64>,
    attention_mask: Vec<i64>,
    labels: Vec<i64>,
}

impl TokenizedParquet {
    /// A file at `path`, appearing there when [`TokenizedParquet::finish`] is called.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(TokenizedParquet {
            out: ParquetOut::create(path, tokenized_columns())?,
            rows: 0,
            lengths: Default::default(),
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
            labels: Vec::new(),
        })
    }

    /// Adds one sample's `input_ids`, `attention_mask` and `labels`.
    ///
    /// # Errors
    ///
    /// An input error, naming the sample, for one of more than 2^31 - 1 tokens; an
    /// error of the file for a row group that cannot be written.
    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        let longest = s
            .input_ids
            .len()
            .max(s.labels.len())
            .max(s.attention_mask.len());
        if longest > MAX_LEN {
            let what = format!("a sample of {longest} tokens");
            return Err(too_large(self.out.path(), &s.id, what));
        }
        let buffered = self
            .input_ids
            .len()
            .max(self.labels.len())
            .max(self.attention_mask.len());
        if self.rows > 0 && buffered + longest > MAX_LEN {
            self.flush()?;
        }
        self.lengths[0].push(s.input_ids.len());
        self.input_ids
            .extend(s.input_ids.iter().map(|&t| i64::from(t)));
        self.lengths[1].push(s.attention_mask.len());
        self.attention_mask
            .extend(s.attention_mask.iter().map(|&m| i64::from(m)));
        self.lengths[2].push(s.labels.len());
        self.labels.extend_from_slice(&s.labels);
        self.rows += 1;
        if self.rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let [ids, mask, labels] = &mut self.lengths;
        let columns = vec![
            list(ids, primitives(&mut self.input_ids))?,
            list(mask, primitives(&mut self.attention_mask))?,
            list(labels, primitives(&mut self.labels))?,
        ];
        self.out.write(rows, columns)
    }

    /// Writes what is buffered and the footer, and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}

/// Writes `columns` (of these `fields`, `rows` long) as a Parquet file at `path`: files
/// with other columns and types, for tests of the readers.
#[cfg(test)]
pub(super) fn write_columns(
    path: &Path,
    fields: Vec<Field>,
    rows: usize,
    columns: Vec<Box<dyn Array>>,
) -> Result<()> {
    let mut out = ParquetOut::create(path, fields)?;
    out.write(rows, columns)?;
    out.finish()
}
