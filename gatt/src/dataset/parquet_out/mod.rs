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

mod dialogues;
mod exports;
mod samples;

pub use dialogues::DialogueParquet;
pub use exports::{PromptCompletionParquet, TokenizedParquet};
pub use samples::SampleParquet;

use super::{AtomicFile, Location};
use crate::error::{Error, Result};
use polars::error::PolarsError;
use polars_arrow::array::{Array, ListArray, MutableBinaryViewArray, PrimitiveArray, StructArray};
use polars_arrow::datatypes::{ArrowDataType, ArrowSchema, Field};
use polars_arrow::offset::{Offsets, OffsetsBuffer};
use polars_arrow::types::NativeType;
use polars_parquet::read::ParquetError;
use polars_parquet::write::{
    array_to_columns, get_dtype_encoding, schema_to_metadata_key, CompressionOptions, Compressor,
    DynIter, DynStreamingIterator, Encoding, FallibleStreamingIterator, FileWriter, KeyValue,
    ParquetType, RowGroupIterColumns, StatisticsOptions, Version, WriteOptions,
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
    /// File-level key-value metadata written with the footer, besides the Arrow schema.
    key_values: Vec<KeyValue>,
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
            key_values: Vec::new(),
        })
    }

    /// Sets file-level key-value metadata `key` (written with the footer).
    fn set_key_value(&mut self, key: &str, value: String) {
        self.key_values.retain(|kv| kv.key != key);
        self.key_values.push(KeyValue {
            key: key.to_string(),
            value: Some(value),
        });
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
        // The Arrow schema (which `end(None)` would write alone), holding our keys as its
        // own metadata too, then our keys. pyarrow reads a file's metadata from the stored
        // Arrow schema alone when there is one: keys only in the footer are lost when it
        // (or `datasets`) reads and writes the file again.
        let mut key_values = vec![arrow_schema_key(self.writer.schema(), &self.key_values)];
        key_values.append(&mut self.key_values);
        self.writer
            .end(Some(key_values))
            .map_err(|e| failed(&path, &self.io_error, e))?;
        self.writer
            .into_inner()
            .into_inner()
            .map_err(|e| Error::io(&path, "write", e.into_error()))?;
        self.file.commit()
    }
}

/// The `ARROW:schema` key-value of `schema` with `custom` as the schema's metadata, as
/// polars' `schema_to_metadata_key` writes it otherwise (a length-prefixed Arrow IPC
/// message, base64). The samples' columns (lists, strings, integers) need none of the
/// type conversions it makes for large lists and empty structs.
fn arrow_schema_key(
    schema: &polars_arrow::datatypes::ArrowSchema,
    custom: &[KeyValue],
) -> KeyValue {
    use polars::prelude::PlSmallStr;
    use polars_arrow::io::ipc::write::{default_ipc_fields, schema_to_bytes};
    if custom.is_empty() {
        return schema_to_metadata_key(schema);
    }
    let metadata: polars_arrow::datatypes::Metadata = custom
        .iter()
        .map(|kv| {
            let value = kv.value.clone().unwrap_or_default();
            (PlSmallStr::from(kv.key.as_str()), PlSmallStr::from(value))
        })
        .collect();
    let ipc = default_ipc_fields(schema.iter_values());
    let bytes = schema_to_bytes(schema, &ipc, Some(&metadata));
    let mut prefixed = Vec::with_capacity(bytes.len() + 8);
    prefixed.extend_from_slice(&[255u8, 255, 255, 255]);
    prefixed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    prefixed.extend_from_slice(&bytes);
    use base64::Engine as _;
    KeyValue {
        key: "ARROW:schema".to_string(),
        value: Some(base64::engine::general_purpose::STANDARD.encode(prefixed)),
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
/// The longest of a sample's three lists, in tokens.
///
/// # Errors
///
/// An input error, naming the sample, when it is longer than a `list` holds.
fn sample_length(path: &Path, s: &crate::mask::MaskedSample) -> Result<usize> {
    let longest = s
        .input_ids
        .len()
        .max(s.labels.len())
        .max(s.attention_mask.len());
    if longest > MAX_LEN {
        let what = format!("a sample of {longest} tokens");
        return Err(too_large(path, &s.id, what));
    }
    Ok(longest)
}

fn too_large(path: &Path, id: &str, what: String) -> Error {
    Error::input(format!(
        "{what}; Arrow's `string` and `list` types hold at most {MAX_LEN}; nothing written"
    ))
    .at(Location::in_file(path).with_id(id))
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
