//! Parquet via polars. Nested dialogue columns go through polars' JSON reader and
//! writer (the one conversion polars keeps stable for list-of-struct columns); masked
//! samples, the large and hot output, are built column by column.

use super::raw::parse_record;
use super::{AtomicFile, Location};
use crate::dialogue::Dialogue;
use crate::error::{Error, Result};
use crate::mask::MaskedSample;
use polars::prelude::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Records buffered before a row group is written.
const CHUNK: usize = 4096;

fn dialogue_schema() -> Schema {
    let message = DataType::Struct(vec![
        Field::new("role".into(), DataType::String),
        Field::new("content".into(), DataType::String),
    ]);
    let constraint = DataType::Struct(vec![
        Field::new("kind".into(), DataType::String),
        Field::new("value".into(), DataType::String),
        Field::new("param".into(), DataType::String),
    ]);
    Schema::from_iter([
        Field::new("id".into(), DataType::String),
        Field::new("messages".into(), DataType::List(Box::new(message))),
        Field::new("instruction".into(), DataType::String),
        Field::new("constraints".into(), DataType::List(Box::new(constraint))),
        Field::new("meta".into(), DataType::String),
    ])
}

/// Streams records out of a Parquet file a slice of rows at a time.
pub struct DialogueRows {
    path: PathBuf,
    rows: usize,
    next_row: usize,
    buffered: std::vec::IntoIter<Result<(Location, Dialogue)>>,
}

/// A Parquet reader on `path`, nothing read yet.
pub(super) fn open_reader(path: &Path) -> Result<ParquetReader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    Ok(ParquetReader::new(f))
}

impl DialogueRows {
    pub fn open(path: &Path) -> Result<Self> {
        let rows = open_reader(path)?.num_rows().map_err(|e| {
            Error::input(format!("not a readable Parquet file: {e}"))
                .at(Location::in_file(path))
                .with_source(e)
        })?;
        Ok(DialogueRows {
            path: path.to_path_buf(),
            rows,
            next_row: 0,
            buffered: Vec::new().into_iter(),
        })
    }

    fn fill(&mut self) -> Result<()> {
        let n = CHUNK.min(self.rows - self.next_row);
        let mut df = open_reader(&self.path)?
            .with_slice(Some((self.next_row, n)))
            .finish()
            .map_err(|e| {
                Error::input(format!(
                    "cannot read rows {}..{}: {e}",
                    self.next_row,
                    self.next_row + n
                ))
                .at(Location::in_file(&self.path))
                .with_source(e)
            })?;
        let mut json = Vec::new();
        JsonWriter::new(&mut json)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut df)?;
        let start = self.next_row;
        let path = self.path.clone();
        let items: Vec<_> = json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, line)| {
                let loc = Location::in_file(&path).at_row(start + i);
                let text = std::str::from_utf8(line).map_err(|e| {
                    Error::input("text is not UTF-8")
                        .at(loc.clone())
                        .with_source(e)
                })?;
                parse_record(text, &loc).map(|d| (loc, d))
            })
            .collect();
        self.next_row += n;
        self.buffered = items.into_iter();
        Ok(())
    }
}

impl Iterator for DialogueRows {
    type Item = Result<(Location, Dialogue)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buffered.next() {
                return Some(item);
            }
            if self.next_row >= self.rows {
                return None;
            }
            if let Err(e) = self.fill() {
                self.next_row = self.rows;
                return Some(Err(e));
            }
        }
    }
}

/// Parquet row as written: `meta` as a JSON string (free-form maps have no fixed schema).
#[derive(serde::Serialize)]
struct DialogueRow<'a> {
    id: &'a str,
    messages: &'a [crate::dialogue::Message],
    instruction: &'a str,
    constraints: &'a [crate::dialogue::Constraint],
    meta: String,
}

pub struct DialogueParquet {
    file: AtomicFile,
    writer: Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
    schema: Schema,
    pending: Vec<u8>,
    pending_rows: usize,
}

impl DialogueParquet {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(DialogueParquet {
            file: AtomicFile::create(path)?,
            writer: None,
            schema: dialogue_schema(),
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    pub fn write(&mut self, d: &Dialogue) -> Result<()> {
        let row = DialogueRow {
            id: &d.id,
            messages: &d.messages,
            instruction: &d.instruction,
            constraints: &d.constraints,
            meta: serde_json::to_string(&d.meta).unwrap_or_default(),
        };
        serde_json::to_writer(&mut self.pending, &row).map_err(|e| {
            Error::runtime(format!("cannot serialize: {e}"))
                .at(Location::in_file(self.file.path()).with_id(&d.id))
                .with_source(e)
        })?;
        self.pending.push(b'\n');
        self.pending_rows += 1;
        if self.pending_rows >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending_rows == 0 && self.writer.is_some() {
            return Ok(());
        }
        let df = JsonReader::new(Cursor::new(std::mem::take(&mut self.pending)))
            .with_json_format(JsonFormat::JsonLines)
            .with_schema(Arc::new(self.schema.clone()))
            .finish()?;
        self.pending_rows = 0;
        write_batch(&mut self.file, &mut self.writer, &self.schema, &df)
    }

    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        finish_writer(self.file, self.writer)
    }
}

fn write_batch(
    file: &mut AtomicFile,
    writer: &mut Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
    schema: &Schema,
    df: &DataFrame,
) -> Result<()> {
    if writer.is_none() {
        let f = file
            .writer()
            .get_ref()
            .try_clone()
            .map_err(|e| Error::io(file.path(), "write", e))?;
        *writer = Some(
            ParquetWriter::new(f)
                .with_compression(ParquetCompression::Zstd(None))
                .batched(schema)?,
        );
    }
    if df.height() > 0 {
        writer.as_mut().expect("set above").write_batch(df)?;
    }
    Ok(())
}

fn finish_writer(
    file: AtomicFile,
    writer: Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
) -> Result<()> {
    if let Some(w) = writer {
        w.finish()?;
    }
    file.commit()
}

/// Masked samples, built straight into typed list columns.
pub struct SampleParquet {
    file: AtomicFile,
    writer: Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
    buf: Vec<MaskedSample>,
}

fn sample_schema() -> Schema {
    Schema::from_iter([
        Field::new("id".into(), DataType::String),
        Field::new(
            "input_ids".into(),
            DataType::List(Box::new(DataType::UInt32)),
        ),
        Field::new("labels".into(), DataType::List(Box::new(DataType::Int64))),
        Field::new(
            "attention_mask".into(),
            DataType::List(Box::new(DataType::UInt8)),
        ),
        Field::new("n_tokens".into(), DataType::UInt32),
        Field::new("n_loss_tokens".into(), DataType::UInt32),
    ])
}

impl SampleParquet {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(SampleParquet {
            file: AtomicFile::create(path)?,
            writer: None,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    pub fn write(&mut self, s: &MaskedSample) -> Result<()> {
        self.buf.push(s.clone());
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let df = samples_frame(&self.buf)?;
        self.buf.clear();
        write_batch(&mut self.file, &mut self.writer, &sample_schema(), &df)
    }

    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        finish_writer(self.file, self.writer)
    }
}

fn samples_frame(samples: &[MaskedSample]) -> Result<DataFrame> {
    let n = samples.len();
    let total: usize = samples.iter().map(|s| s.input_ids.len()).sum();
    let mut ids = ListPrimitiveChunkedBuilder::<UInt32Type>::new(
        "input_ids".into(),
        n,
        total,
        DataType::UInt32,
    );
    let mut labels =
        ListPrimitiveChunkedBuilder::<Int64Type>::new("labels".into(), n, total, DataType::Int64);
    let mut mask = ListPrimitiveChunkedBuilder::<UInt8Type>::new(
        "attention_mask".into(),
        n,
        total,
        DataType::UInt8,
    );
    for s in samples {
        ids.append_slice(&s.input_ids);
        labels.append_slice(&s.labels);
        mask.append_slice(&s.attention_mask);
    }
    let id = Column::new(
        "id".into(),
        samples.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
    );
    let n_tokens = Column::new(
        "n_tokens".into(),
        samples
            .iter()
            .map(|s| s.n_tokens() as u32)
            .collect::<Vec<_>>(),
    );
    let n_loss = Column::new(
        "n_loss_tokens".into(),
        samples
            .iter()
            .map(|s| s.n_loss_tokens() as u32)
            .collect::<Vec<_>>(),
    );
    Ok(DataFrame::new(
        n,
        vec![
            id,
            ids.finish().into_column(),
            labels.finish().into_column(),
            mask.finish().into_column(),
            n_tokens,
            n_loss,
        ],
    )?)
}
