//! JSON lines: one record per line.

use super::raw::parse_record;
use super::{AtomicFile, Location};
use crate::dialogue::Dialogue;
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Streams the records of a JSONL file, one per non-blank line.
pub struct DialogueLines {
    path: PathBuf,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    /// Lines read so far (the 1-based number of the last one).
    line: usize,
    /// Records (non-blank lines) read so far (the 0-based row of the next one).
    rows: usize,
    /// Set after a read failed for a reason other than the line's bytes: the file
    /// cannot be read on, so iteration ends after reporting it once.
    failed: bool,
}

impl DialogueLines {
    pub fn open(path: &Path) -> Result<Self> {
        let f = super::open_file(path)?;
        Ok(DialogueLines {
            path: path.to_path_buf(),
            lines: BufReader::with_capacity(1 << 20, f).lines(),
            line: 0,
            rows: 0,
            failed: false,
        })
    }
}

impl Iterator for DialogueLines {
    type Item = Result<(Location, Dialogue)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let line = self.lines.next()?;
            self.line += 1;
            let at_line = Location::in_file(&self.path).at_line(self.line);
            let text = match line {
                Ok(t) => t,
                Err(e) => {
                    // Bad UTF-8 spoils one line; any other failure, the rest of the file.
                    self.failed = e.kind() != std::io::ErrorKind::InvalidData;
                    return Some(Err(Error::input(format!("cannot read: {e}"))
                        .at(at_line)
                        .with_source(e)));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let loc = at_line.at_row(self.rows);
            self.rows += 1;
            return Some(parse_record(&text, &loc).map(|d| (loc, d)));
        }
    }
}

/// A JSONL file written atomically.
pub struct JsonlWriter {
    file: AtomicFile,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(JsonlWriter {
            file: AtomicFile::create(path)?,
        })
    }

    pub fn write<T: serde::Serialize>(&mut self, row: &T) -> Result<()> {
        let path = self.file.path().to_path_buf();
        let w = self.file.writer();
        serde_json::to_writer(&mut *w, row).map_err(|e| {
            if e.is_io() {
                // A failed write (a full disk): worded as every I/O error is.
                return Error::io(&path, "write", std::io::Error::from(e));
            }
            Error::runtime(format!("cannot write: {e}"))
                .at(Location::in_file(&path))
                .with_source(e)
        })?;
        w.write_all(b"\n").map_err(|e| Error::io(&path, "write", e))
    }

    pub fn finish(self) -> Result<()> {
        self.file.commit()
    }
}
