//! Dialogue records as Parquet: `id`, `messages`, `instruction`, `constraints`, `meta`.

use super::*;
use crate::dialogue::Dialogue;

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
