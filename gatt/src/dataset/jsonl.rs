//! JSON lines: one record per line.

use super::raw::parse_record;
use super::{AtomicFile, Format, Location};
use crate::dialogue::Dialogue;
use crate::error::{Error, Result};
use crate::mask::MaskedSample;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub struct DialogueLines {
    path: PathBuf,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    line: usize,
}

impl DialogueLines {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
        Ok(DialogueLines {
            path: path.to_path_buf(),
            lines: BufReader::with_capacity(1 << 20, f).lines(),
            line: 0,
        })
    }
}

impl Iterator for DialogueLines {
    type Item = Result<(Location, Dialogue)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.line += 1;
            let loc = Location {
                path: self.path.clone(),
                index: self.line,
                format: Format::Jsonl,
            };
            let text = match line {
                Ok(t) => t,
                Err(e) => return Some(Err(Error::input(format!("{loc}: cannot read: {e}")))),
            };
            if text.trim().is_empty() {
                continue;
            }
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
        serde_json::to_writer(&mut *w, row)
            .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
        w.write_all(b"\n").map_err(|e| Error::io(&path, "write", e))
    }

    pub fn finish(self) -> Result<()> {
        self.file.commit()
    }
}

#[derive(serde::Deserialize)]
struct SampleLine {
    id: String,
    input_ids: Vec<u32>,
    labels: Vec<i64>,
    #[serde(default)]
    attention_mask: Option<Vec<u8>>,
}

pub fn read_samples(path: &Path) -> Result<Vec<MaskedSample>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, "read", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let s: SampleLine = serde_json::from_str(&line).map_err(|e| {
            Error::input(format!(
                "{}:{}: not a masked sample: {e}",
                path.display(),
                i + 1
            ))
        })?;
        let n = s.input_ids.len();
        out.push(MaskedSample {
            id: s.id,
            input_ids: s.input_ids,
            labels: s.labels,
            attention_mask: s.attention_mask.unwrap_or_else(|| vec![1; n]),
        });
    }
    Ok(out)
}
