//! Reading dialogue records from Parquet via polars: a slice of rows at a time,
//! through polars' JSON writer (the one conversion polars keeps stable for
//! list-of-struct columns). Writing is in [`super::parquet_out`].

use super::raw::parse_record;
use super::Location;
use crate::dialogue::Dialogue;
use crate::error::{Error, Result};
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// Rows read at a time.
const CHUNK: usize = 4096;

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
