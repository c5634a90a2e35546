//! JSON lines: one record per line.

use super::raw::parse_record;
use super::{AtomicFile, Location};
use crate::dialogue::Dialogue;
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};

/// Longest line read, in bytes: 64 MiB, far beyond any dialogue (a 2,000-turn record is
/// a few MB). A longer line is refused before it is held in memory whole.
pub const MAX_LINE_BYTES: usize = 64 << 20;
use std::path::{Path, PathBuf};

/// Streams the records of a JSONL file, one per non-blank line.
pub struct DialogueLines {
    path: PathBuf,
    reader: BufReader<std::fs::File>,
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
            reader: BufReader::with_capacity(1 << 20, f),
            line: 0,
            rows: 0,
            failed: false,
        })
    }
}

/// The next line of `reader` without its line break; `None` at the end. A line longer
/// than [`MAX_LINE_BYTES`] is an error (`InvalidInput`) read no further, bytes that are
/// not UTF-8 another (`InvalidData`).
pub(super) fn read_line(reader: &mut impl BufRead) -> Option<std::io::Result<String>> {
    let mut buf = Vec::new();
    let limit = MAX_LINE_BYTES as u64 + 1;
    match reader.take(limit).read_until(b'\n', &mut buf) {
        Ok(0) => None,
        Ok(_) if buf.len() > MAX_LINE_BYTES => Some(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the line is longer than {} MiB; a record is never that long",
                MAX_LINE_BYTES >> 20
            ),
        ))),
        Ok(_) => {
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            Some(
                String::from_utf8(buf).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error())
                }),
            )
        }
        Err(e) => Some(Err(e)),
    }
}

impl Iterator for DialogueLines {
    type Item = Result<(Location, Dialogue)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let line = read_line(&mut self.reader)?;
            self.line += 1;
            let at_line = Location::in_file(&self.path).at_line(self.line);
            let text = match line {
                // A byte order mark opens files that Windows tools (PowerShell's
                // `Out-File`, Excel's "UTF-8 CSV") write; it is not part of the record.
                Ok(t) if self.line == 1 && t.starts_with('\u{feff}') => {
                    t['\u{feff}'.len_utf8()..].to_string()
                }
                Ok(t) => t,
                Err(e) => {
                    // Bad UTF-8 spoils one line; any other failure (a line too long to
                    // read, an I/O error), the rest of the file.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_breaks_and_a_line_past_the_limit_stops_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let rec = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        let mut bytes = format!("{rec}\r\n\n{rec}\n").into_bytes();
        bytes.extend(b"\xff\n");
        bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        bytes.extend(format!("\n{rec}\n").into_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let items: Vec<_> = DialogueLines::open(&path).unwrap().collect();
        assert_eq!(
            items.len(),
            4,
            "two records, a bad line, the long one, then nothing"
        );
        assert!(items[0].is_ok() && items[1].is_ok());
        let bad_utf8 = items[2].as_ref().unwrap_err().to_string();
        assert!(bad_utf8.contains(":4"), "{bad_utf8}");
        let long = items[3].as_ref().unwrap_err();
        assert!(
            long.is_input() && long.to_string().contains("64 MiB"),
            "{long}"
        );
    }
}

#[cfg(test)]
mod bom_tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped_and_only_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let rec = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        std::fs::write(&path, format!("\u{feff}{rec}\n\u{feff}{rec}\n")).unwrap();
        let items: Vec<_> = DialogueLines::open(&path).unwrap().collect();
        assert!(items[0].is_ok(), "{:?}", items[0].as_ref().err());
        // Inside the file a BOM is not whitespace JSON allows: that line is refused.
        let e = items[1].as_ref().unwrap_err().to_string();
        assert!(e.contains(":2") && e.contains("byte order mark"), "{e}");
        // Two marks at the start (a file with a mark joined to an empty one): the second
        // is named as such, not as a mark that only the first line may carry.
        std::fs::write(&path, format!("\u{feff}\u{feff}{rec}\n")).unwrap();
        let items: Vec<_> = DialogueLines::open(&path).unwrap().collect();
        let e = items[0].as_ref().unwrap_err().to_string();
        assert!(
            e.contains(":1") && e.contains("second byte order mark"),
            "{e}"
        );
    }
}
