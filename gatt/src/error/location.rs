//! Where in the input an error is: a file, a line or row in it, a record, a field.

use std::path::{Path, PathBuf};

/// A place in the user's input, shown at the start of an error message.
///
/// Rows and lines follow one convention everywhere:
///
/// - `row` is the 0-based index of a record in its file (blank JSONL lines are not
///   records), the number the inspect command takes;
/// - `line` is the 1-based line of a text file (JSONL), as editors count.
///
/// A JSONL record has both; a Parquet record only a row.
///
/// Rendered as ``m.jsonl:4 (row 3, id `x`): field `labels[2]` ``, or
/// ``m.parquet: row 3 (id `x`): field `labels[2]` `` without a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file, displayed as the path it was opened by.
    pub file: Option<PathBuf>,
    /// 1-based line of a text file.
    pub line: Option<usize>,
    /// 0-based record index, as the inspect command counts.
    pub row: Option<usize>,
    /// The record's `id`, when known.
    pub id: Option<String>,
    /// The field at fault, as a path into the record: `messages[1].role`, `meta.seed`.
    pub field: Option<String>,
}

impl Location {
    /// A whole file.
    pub fn in_file(path: &Path) -> Self {
        Location {
            file: Some(path.to_path_buf()),
            ..Location::default()
        }
    }

    /// At 1-based `line`.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// At 0-based `row`.
    pub fn at_row(mut self, row: usize) -> Self {
        self.row = Some(row);
        self
    }

    /// Of the record with this id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// At this field of the record.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// `self`, with what it does not say taken from `outer` (a caller that knows the
    /// file and row of a record whose field is at fault).
    pub fn or(self, outer: Location) -> Location {
        Location {
            file: self.file.or(outer.file),
            line: self.line.or(outer.line),
            row: self.row.or(outer.row),
            id: self.id.or(outer.id),
            field: self.field.or(outer.field),
        }
    }

    /// True when the location says nothing.
    pub fn is_empty(&self) -> bool {
        *self == Location::default()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(file) = &self.file {
            parts.push(match self.line {
                Some(line) => format!("{}:{line}", file.display()),
                None => file.display().to_string(),
            });
        } else if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        let mut record: Vec<String> = Vec::new();
        if let Some(row) = self.row {
            record.push(format!("row {row}"));
        }
        if let Some(id) = &self.id {
            record.push(format!("id `{id}`"));
        }
        // After a line, the row and id are a parenthesis; otherwise the row is a part of
        // its own and only the id is in parentheses.
        if !record.is_empty() {
            let by_line = self.line.is_some() || self.row.is_none();
            if by_line && !parts.is_empty() {
                let last = parts.pop().unwrap_or_default();
                parts.push(format!("{last} ({})", record.join(", ")));
            } else if let (Some(row), Some(id)) = (self.row, &self.id) {
                parts.push(format!("row {row} (id `{id}`)"));
            } else {
                parts.push(record.join(", "));
            }
        }
        if let Some(field) = &self.field {
            parts.push(format!("field `{field}`"));
        }
        f.write_str(&parts.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> Location {
        Location::in_file(Path::new(path))
    }

    #[test]
    fn renders_lines_rows_ids_and_fields() {
        let cases = [
            (at("m.jsonl").at_line(4).at_row(3), "m.jsonl:4 (row 3)"),
            (at("m.parquet").at_row(3), "m.parquet: row 3"),
            (
                at("m.parquet").at_row(3).with_id("x"),
                "m.parquet: row 3 (id `x`)",
            ),
            (
                at("m.jsonl")
                    .at_line(4)
                    .at_row(3)
                    .with_id("x")
                    .with_field("labels[2]"),
                "m.jsonl:4 (row 3, id `x`): field `labels[2]`",
            ),
            (
                at("run.json").with_field("status"),
                "run.json: field `status`",
            ),
            (at("a.jsonl").with_id("x"), "a.jsonl (id `x`)"),
            (
                Location::default().with_field("meta.seed"),
                "field `meta.seed`",
            ),
            (Location::default().at_row(2), "row 2"),
        ];
        for (loc, text) in cases {
            assert_eq!(loc.to_string(), text);
        }
    }

    #[test]
    fn inner_fields_win_and_outer_ones_fill_in() {
        let inner = Location::default().with_field("meta.seed");
        let got = inner.or(at("d.jsonl").at_line(2).at_row(1).with_field("meta"));
        assert_eq!(got.to_string(), "d.jsonl:2 (row 1): field `meta.seed`");
        assert!(Location::default().is_empty() && !got.is_empty());
    }
}
