//! Reading Parquet: dialogue records a row group at a time, and whole columns (for
//! masked samples, in [`super::samples`]). Writing is in [`super::parquet_out`].
//!
//! Columns are decoded with polars' Parquet decoder straight into Arrow arrays, and
//! only the columns a record or sample is made of: no polars frame is built, because a
//! frame turns a one-row column into a single value, and that path panics for types
//! this build of polars leaves out (lists of u8, i8, u16, i16). Whatever types a file
//! stores (`string` or `string_view`, `list` or `large_list`), the decoder makes
//! `string_view` and `large_list` arrays of them.

use super::raw::parse_record;
use super::Location;
use crate::dialogue::Dialogue;
use crate::error::{Error, ErrorKind, Result};
use polars::error::PolarsError;
use polars_arrow::array::{
    Array, BinaryViewArray, BooleanArray, FixedSizeListArray, ListArray, PrimitiveArray,
    StructArray, Utf8Array, Utf8ViewArray,
};
use polars_arrow::datatypes::{ArrowDataType, ArrowSchema};
use polars_arrow::offset::Offset;
use polars_arrow::types::NativeType;
use polars_buffer::Buffer;
use polars_parquet::read::{
    column_iter_to_arrays, infer_schema, read_metadata, BasicDecompressor, FileMetadata, PageReader,
};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A Parquet file open for reading, one column of one row group at a time.
pub(super) struct ParquetFile {
    path: PathBuf,
    file: File,
    /// The file's length in bytes, to check column chunks against.
    len: u64,
    metadata: FileMetadata,
    /// The Arrow schema, with the types polars' decoder makes.
    schema: ArrowSchema,
}

impl ParquetFile {
    /// Opens `path` and reads its footer.
    ///
    /// # Errors
    ///
    /// An input error for a missing file or one that is not Parquet.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let mut file = super::open_file(path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "open", e))?
            .len();
        let metadata = read_metadata(&mut file).map_err(|e| unreadable(path, e))?;
        let schema = infer_schema(&metadata).map_err(|e| unreadable(path, e))?;
        Ok(ParquetFile {
            path: path.to_path_buf(),
            file,
            len,
            metadata,
            schema,
        })
    }

    /// The value of file-level key-value metadata `key`, if the file has one.
    pub(super) fn key_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .key_value_metadata()
            .as_ref()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
    }

    /// The number of rows of each row group, in order.
    fn group_rows(&self) -> Vec<usize> {
        self.metadata
            .row_groups
            .iter()
            .map(|g| g.num_rows())
            .collect()
    }

    /// Whether the file has a column `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.schema.get(name).is_some()
    }

    /// The arrays of column `name` (which [`ParquetFile::has`]), in row order.
    pub(super) fn column(&mut self, name: &str) -> Result<Vec<Box<dyn Array>>> {
        let mut arrays = Vec::new();
        for group in 0..self.metadata.row_groups.len() {
            arrays.extend(self.read(name, group)?);
        }
        Ok(arrays)
    }

    /// The arrays of column `name` (which [`ParquetFile::has`]) in row group `group`.
    fn read(&mut self, name: &str, group: usize) -> Result<Vec<Box<dyn Array>>> {
        let ParquetFile {
            path,
            file,
            len,
            metadata,
            schema,
        } = self;
        let bad = |what: String| {
            Error::input(format!("not a readable Parquet file: {what}")).at(Location::in_file(path))
        };
        let field = schema
            .get(name)
            .ok_or_else(|| bad(format!("no column `{name}`")))?
            .clone();
        let chunks: Vec<_> = metadata
            .row_groups
            .get(group)
            .and_then(|g| g.columns_under_root_iter(name))
            .ok_or_else(|| bad(format!("row group {group} lacks column `{name}`")))?
            .collect();
        let mut pages = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let range = chunk.byte_range();
            if range.start > range.end || range.end > *len {
                return Err(bad(format!("column `{name}` lies outside the file")));
            }
            // At most the file's length, checked above.
            let mut bytes = vec![0; (range.end - range.start) as usize];
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| Error::io(path, "read", e))?;
            let bytes = Cursor::new(Buffer::from(bytes));
            let reader = PageReader::new(bytes, chunk, vec![], usize::MAX);
            pages.push(BasicDecompressor::new(reader, vec![]));
        }
        let types = chunks
            .iter()
            .map(|c| &c.descriptor().descriptor.primitive_type)
            .collect();
        let (arrays, _) =
            column_iter_to_arrays(pages, types, field, None).map_err(|e| unreadable(path, e))?;
        Ok(arrays)
    }
}

/// The input error for a file polars' Parquet decoder cannot read.
fn unreadable(path: &Path, e: PolarsError) -> Error {
    Error::input(format!("not a readable Parquet file: {e}"))
        .at(Location::in_file(path))
        .with_source(e)
}

/// The columns a dialogue record is read from (ours, and ShareGPT's `conversations` and
/// `system`);
/// a file's other columns are not read.
const RECORD_COLUMNS: [&str; 7] = [
    "id",
    "messages",
    "conversations",
    "system",
    "instruction",
    "constraints",
    "meta",
];

/// Streams records out of a Parquet file, decoding a row group at a time.
pub struct DialogueRows {
    file: ParquetFile,
    /// The record columns the file has.
    columns: Vec<&'static str>,
    /// The rows of each row group.
    groups: Vec<usize>,
    /// The next row group to decode.
    next_group: usize,
    /// The file row of its first record.
    next_row: usize,
    /// The row group being read.
    current: Option<Group>,
}

/// The decoded record columns of one row group, read a record at a time.
struct Group {
    /// Each record column's name and arrays.
    columns: Vec<(&'static str, Vec<Box<dyn Array>>)>,
    /// The file row of the group's first record.
    first_row: usize,
    rows: usize,
    /// The next record, counted from the group's first.
    next: usize,
}

impl Group {
    /// The next record with its place, or `None` after the last. A value that cannot
    /// be read refuses its record (at its row and field), not the others.
    fn next_record(&mut self, path: &Path) -> Option<Result<(Location, Dialogue)>> {
        if self.next >= self.rows {
            return None;
        }
        let row = self.next;
        self.next += 1;
        let loc = Location::in_file(path).at_row(self.first_row.saturating_add(row));
        let mut record = Map::new();
        for (name, arrays) in &self.columns {
            let value = value_at(arrays, row).map_err(|what| {
                Error::input(format!("cannot read {what}")).at(loc.clone().with_field(*name))
            });
            match value {
                Ok(v) => record.insert(name.to_string(), v),
                Err(e) => return Some(Err(e)),
            };
        }
        let text = Value::Object(record).to_string();
        Some(parse_record(&text, &loc).map(|d| (loc, d)))
    }
}

/// Value `row` of a column split into `arrays`, as JSON (null past its end).
fn value_at(arrays: &[Box<dyn Array>], mut row: usize) -> std::result::Result<Value, String> {
    for array in arrays {
        if row < array.len() {
            return to_json(array.as_ref(), row);
        }
        row -= array.len();
    }
    Ok(Value::Null)
}

impl DialogueRows {
    /// Opens `path` and reads its footer; records are read as they are asked for.
    ///
    /// # Errors
    ///
    /// An input error for a missing file or one that is not Parquet.
    pub fn open(path: &Path) -> Result<Self> {
        let file = ParquetFile::open(path)?;
        let columns = RECORD_COLUMNS.into_iter().filter(|c| file.has(c)).collect();
        Ok(DialogueRows {
            groups: file.group_rows(),
            file,
            columns,
            next_group: 0,
            next_row: 0,
            current: None,
        })
    }

    /// Decodes the record columns of the next row group, `None` after the last.
    fn decode_next(&mut self) -> Option<Result<Group>> {
        let index = self.next_group;
        let rows = *self.groups.get(index)?;
        self.next_group += 1;
        let first_row = self.next_row;
        self.next_row = first_row.saturating_add(rows);
        let mut columns = Vec::with_capacity(self.columns.len());
        for name in self.columns.clone() {
            match self.file.read(name, index) {
                Ok(arrays) => columns.push((name, arrays)),
                Err(e) => {
                    let message = format!(
                        "cannot read rows {first_row}..{}: {}",
                        first_row.saturating_add(rows),
                        e.message()
                    );
                    let wrapped = match e.kind() {
                        ErrorKind::Input => Error::input(message),
                        ErrorKind::Runtime => Error::runtime(message),
                    };
                    return Some(Err(wrapped
                        .at(Location::in_file(&self.file.path))
                        .with_source(e)));
                }
            }
        }
        // No more records than the columns hold, whatever the footer says.
        let decoded = columns
            .iter()
            .map(|(_, arrays)| arrays.iter().map(|a| a.len()).sum())
            .max();
        Some(Ok(Group {
            columns,
            first_row,
            rows: decoded.map_or(rows, |n: usize| n.min(rows)),
            next: 0,
        }))
    }
}

impl Iterator for DialogueRows {
    type Item = Result<(Location, Dialogue)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(group) = &mut self.current {
                if let Some(item) = group.next_record(&self.file.path) {
                    return Some(item);
                }
                self.current = None;
            }
            match self.decode_next()? {
                Ok(group) => self.current = Some(group),
                Err(e) => {
                    // A row group that cannot be decoded ends the stream.
                    self.next_group = self.groups.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Value `i` of `array` as JSON; what it holds when that has no JSON form (bytes that
/// are not UTF-8, a type other than text, numbers, booleans, lists and structs).
fn to_json(array: &dyn Array, i: usize) -> std::result::Result<Value, String> {
    use ArrowDataType as D;
    if i >= array.len() || array.is_null(i) {
        return Ok(Value::Null);
    }
    fn get<A: 'static>(array: &dyn Array) -> std::result::Result<&A, String> {
        array
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| format!("an array of {:?}", array.dtype()))
    }
    fn number<T: NativeType + Into<Value>>(
        array: &dyn Array,
        i: usize,
    ) -> std::result::Result<Value, String> {
        Ok(get::<PrimitiveArray<T>>(array)?.value(i).into())
    }
    fn float(v: f64) -> Value {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
    fn list<O: Offset>(array: &dyn Array, i: usize) -> std::result::Result<Value, String> {
        let list = get::<ListArray<O>>(array)?;
        let (start, end) = list.offsets().start_end(i);
        let values = list.values().as_ref();
        (start..end).map(|j| to_json(values, j)).collect()
    }
    match array.dtype() {
        D::Null => Ok(Value::Null),
        D::Boolean => Ok(get::<BooleanArray>(array)?.value(i).into()),
        D::Int8 => number::<i8>(array, i),
        D::Int16 => number::<i16>(array, i),
        D::Int32 => number::<i32>(array, i),
        D::Int64 => number::<i64>(array, i),
        D::UInt8 => number::<u8>(array, i),
        D::UInt16 => number::<u16>(array, i),
        D::UInt32 => number::<u32>(array, i),
        D::UInt64 => number::<u64>(array, i),
        D::Float32 => Ok(float(get::<PrimitiveArray<f32>>(array)?.value(i).into())),
        D::Float64 => Ok(float(get::<PrimitiveArray<f64>>(array)?.value(i))),
        D::Utf8View => Ok(get::<Utf8ViewArray>(array)?.value(i).into()),
        D::LargeUtf8 => Ok(get::<Utf8Array<i64>>(array)?.value(i).into()),
        D::Utf8 => Ok(get::<Utf8Array<i32>>(array)?.value(i).into()),
        D::BinaryView => std::str::from_utf8(get::<BinaryViewArray>(array)?.value(i))
            .map(Value::from)
            .map_err(|_| "bytes that are not UTF-8 text".to_string()),
        D::LargeList(_) => list::<i64>(array, i),
        D::List(_) => list::<i32>(array, i),
        D::FixedSizeList(_, size) => {
            let values = get::<FixedSizeListArray>(array)?.values().as_ref();
            (i * size..(i + 1) * size)
                .map(|j| to_json(values, j))
                .collect()
        }
        D::Struct(fields) => {
            let values = get::<StructArray>(array)?.values();
            fields
                .iter()
                .zip(values)
                .map(|(f, v)| Ok((f.name.to_string(), to_json(v.as_ref(), i)?)))
                .collect::<std::result::Result<Map<_, _>, String>>()
                .map(Value::Object)
        }
        other => Err(format!("a value of type {other:?}")),
    }
}
